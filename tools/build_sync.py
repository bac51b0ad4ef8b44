"""Bring BUILD in line with the tree: add a py_library for each new module, drop stale library
targets, and set every target's deps to the imports (the rule tests/build_test.py checks).

    python tools/build_sync.py          # rewrites BUILD in place, prints what changed

Only what build_test.py derives from the tree is touched (library targets, deps); tests,
binaries and their sizes, tags and data are left to the author. Run tests/build_test.py after.
"""

import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import build_test  # noqa: E402  (tests/build_test.py: the scheme's executable form)


def _deps_text(deps, indent="    "):
    if not deps:
        return None
    items = "".join(f'{indent}    ":{d}",\n' for d in sorted(deps))
    return f"{indent}deps = [\n{items}{indent}],"


def _library_text(name, path, deps):
    deps_text = _deps_text(deps)
    return (f'py_library(\n    name = "{name}",\n    srcs = ["{path}"],\n'
            + (deps_text + "\n" if deps_text else "") + ")\n")


def main():
    with open(build_test.BUILD) as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text)
    expected = build_test.expected_targets()
    edits = []  # (first line index, last line index inclusive, replacement text)
    have = {}
    for stmt in tree.body:
        call = stmt.value
        kw = {k.arg: k for k in call.keywords}
        name = kw["name"].value.value if "name" in kw else None
        if call.func.id == "package":
            continue
        have[name] = stmt
        want = expected.get(name)
        if want is None:
            if call.func.id == "py_library":
                edits.append((stmt.lineno - 1, stmt.end_lineno - 1, ""))
                print(f"removed stale :{name}")
            continue
        deps = set(want[2])
        old = kw.get("deps")
        old_deps = {v.value[1:] for v in old.value.elts} if old is not None else set()
        if old_deps == deps:
            continue
        print(f":{name} deps +{sorted(deps - old_deps)} -{sorted(old_deps - deps)}")
        new = _deps_text(deps)
        if old is not None:
            edits.append((old.lineno - 1, old.end_lineno - 1, (new + "\n") if new else ""))
        else:
            closing = stmt.end_lineno - 1  # the line with the call's ")"
            edits.append((closing, closing - 1, new + "\n"))  # insert before it
    inserts = {}  # line index -> new targets' text, in name order
    for name, (kind, path, deps) in sorted(expected.items()):
        if kind != "py_library" or name in have:
            continue
        # after the last library target whose name sorts before it
        before = [s for n, s in have.items() if s.value.func.id == "py_library" and n < name]
        at = max(before, key=lambda s: s.lineno).end_lineno if before else 0
        inserts[at] = inserts.get(at, "") + "\n" + _library_text(name, path, deps)
        print(f"added :{name}")
    edits += [(at, at - 1, new) for at, new in inserts.items()]
    for first, last, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[first:last + 1] = [new] if new else []
    out = "".join(lines)
    while "\n\n\n\n" in out:
        out = out.replace("\n\n\n\n", "\n\n\n")
    with open(build_test.BUILD, "w") as f:
        f.write(out)


if __name__ == "__main__":
    main()
