"""BUILD tells the truth about the tree: one target per module, test and binary, deps equal to the imports.

BUILD is read with Python's ast (the Starlark it uses is Python syntax) and compared with the files on
disk and the imports in them, so adding a module, a test, a binary or an import without the matching
BUILD change fails here with the file and the missing / extra deps named. The naming scheme and the
dependency rule are stated at the top of BUILD; the functions below are their executable form.
"""

import ast
import collections
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "BUILD")
PACKAGE = "ddss_tf"
RUNNER = "tests/bazel_pytest_main.py"
PYTEST_CONFIG = "setup.cfg"
ASSET_SUFFIXES = (".json", ".h5")
ASSET_OWNER = "pretrained"  # the library that loads ddss_tf/assets/ (ddss_tf/pretrained.py)
# The tags BUILD uses: "subprocess" (test_tests_that_start_processes_are_large) and "slow" (left out
# of CI's `bazel test --config=ci`, .bazelrc); a misspelt tag would put a slow test back into CI.
TAGS = {"subprocess", "slow"}

# Native rules of Bazel 4 and the attributes this BUILD may use (a typo such as `dep =` fails here).
_COMMON = {"name", "srcs", "deps", "data", "tags", "visibility", "testonly", "srcs_version", "imports"}
_EXECUTABLE = _COMMON | {"main", "args", "legacy_create_init", "python_version", "stamp"}
RULE_ATTRS = {
    "py_library": _COMMON,
    "py_binary": _EXECUTABLE,
    "py_test": _EXECUTABLE | {"size", "timeout", "flaky", "shard_count", "local"},
    "package": {"default_visibility"},
}

Target = collections.namedtuple("Target", "kind name attrs line")


# ---- BUILD -------------------------------------------------------------------------------------------

def _glob(include, exclude=()):
    """Bazel's glob() on the files under ROOT (one package: BUILD is at the top)."""
    def expand(patterns):
        return {os.path.relpath(p, ROOT) for pat in patterns
                for p in glob.glob(os.path.join(ROOT, pat), recursive=True) if os.path.isfile(p)}
    return sorted(expand(include) - expand(exclude))


def _value(node):
    """A BUILD attribute value: string and list literals, `+` of lists and glob(); nothing else."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _value(node.left) + _value(node.right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "glob":
        return _glob(*[_value(a) for a in node.args], **{k.arg: _value(k.value) for k in node.keywords})
    raise ValueError(f"BUILD line {node.lineno}: unsupported expression {ast.dump(node)[:80]}")


def parse_build(path=BUILD):
    """{name: Target} of every rule in BUILD; raises on anything but native rule calls."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    targets = {}
    for stmt in tree.body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
            raise ValueError(f"BUILD line {stmt.lineno}: only rule calls are allowed")
        kind = call.func.id
        if kind not in RULE_ATTRS:
            raise ValueError(f"BUILD line {stmt.lineno}: {kind}() is not one of the native rules "
                             f"{sorted(RULE_ATTRS)} (Bazel 4, no load())")
        if call.args:
            raise ValueError(f"BUILD line {stmt.lineno}: {kind}() takes keyword arguments only")
        attrs = {kw.arg: _value(kw.value) for kw in call.keywords}
        unknown = set(attrs) - RULE_ATTRS[kind]
        if unknown:
            raise ValueError(f"BUILD line {stmt.lineno}: {kind}() has unknown attributes {sorted(unknown)}")
        if kind == "package":
            continue
        name = attrs.get("name")
        if name in targets:
            raise ValueError(f"BUILD line {stmt.lineno}: target {name!r} defined twice")
        targets[name] = Target(kind, name, attrs, stmt.lineno)
    return targets


# ---- the tree ----------------------------------------------------------------------------------------

def _files(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))


def package_modules():
    """{dotted module name: path} for every ddss_tf/**/*.py; a package is named by its __init__.py."""
    modules = {}
    for path in _files(f"{PACKAGE}/**/*.py"):
        parts = path[:-len(".py")].split("/")
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def library_name(module):
    """ddss_tf -> ddss_tf; ddss_tf.samplers -> samplers; ddss_tf.samplers.ddim -> samplers_ddim."""
    return PACKAGE if module == PACKAGE else module[len(PACKAGE) + 1:].replace(".", "_")


def _test_files():
    return [p for p in _files("tests/*.py") if p.endswith("_test.py")]


def helper_files():
    """tests/*.py that the tests import (and pytest's conftest.py): libraries, not tests."""
    return [p for p in _files("tests/*.py") if not p.endswith("_test.py") and p != RUNNER]


def binary_files():
    return [p for p in _files("bin/*.py") if os.path.basename(p) != "__init__.py"]


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


def _imports_subprocess(path):
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read(), path)
    return any(isinstance(n, ast.Import) and any(a.name == "subprocess" for a in n.names)
               or isinstance(n, ast.ImportFrom) and n.module == "subprocess" for n in ast.walk(tree))


def _ancestors(module):
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def local_imports(path, modules, helpers=()):
    """The BUILD deps of `path` from its imports (anywhere in the file, function-level ones included).

    An imported ddss_tf module counts with the parent packages Python imports on the way, except the
    file's own parent packages: they are imported before the file runs, and listing them would be a
    cycle (package -> its __init__'s imports -> this module -> package). `from P import name` counts
    module P.name if it exists, else P (the name is an attribute of P). `helpers` are the top-level
    module names of the test helpers (tests/*.py imported as `import export_helpers`).
    Returns (deps: set of target names, unknown: ddss_tf modules imported that do not exist).
    """
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read(), path)
    own = {p: m for m, p in modules.items()}.get(path)
    own_parents = set(_ancestors(own)) if own else set()
    if own and path.endswith("__init__.py"):
        package = own
    else:
        package = own.rsplit(".", 1)[0] if own else None
    explicit, implicit, unknown, helper_deps = set(), set(), set(), set()

    def use(module):
        if module not in modules:
            unknown.add(module)
            return
        explicit.add(module)
        implicit.update(_ancestors(module))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    use(alias.name)
                elif alias.name.split(".")[0] in helpers:
                    helper_deps.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if package is None:
                    raise ValueError(f"{path}:{node.lineno}: relative import outside {PACKAGE}")
                up = package.split(".")
                up = up[:len(up) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            if base == PACKAGE or base.startswith(PACKAGE + "."):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    use(candidate if candidate in modules else base)
            elif base.split(".")[0] in helpers:
                helper_deps.add(base.split(".")[0])
    modules_used = explicit | (implicit - own_parents)
    modules_used.discard(own)
    return {library_name(m) for m in modules_used} | helper_deps, unknown


def expected_targets():
    """{name: (kind, source path, expected deps)} for the whole tree, per the scheme in BUILD."""
    modules = package_modules()
    helpers = {_stem(p) for p in helper_files()}
    expected = {}

    def add(name, kind, path, extra=()):
        if name in expected:
            raise ValueError(f"{path} and {expected[name][1]} both map to target {name!r}; "
                             "rename one or extend the naming scheme in BUILD")
        deps, unknown = local_imports(path, modules, helpers)
        if unknown:
            raise ValueError(f"{path} imports {sorted(unknown)}, which are not modules of {PACKAGE}")
        expected[name] = (kind, path, deps | set(extra))

    for module, path in modules.items():
        add(library_name(module), "py_library", path)
    for path in helper_files():
        add(_stem(path), "py_library", path)
    for path in _test_files():
        add(_stem(path), "py_test", path, extra={"conftest"})  # pytest loads tests/conftest.py
    for path in binary_files():
        add(_stem(path), "py_binary", path)
    return expected


# ---- tests -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def targets():
    return parse_build()


@pytest.fixture(scope="module")
def expected():
    return expected_targets()


def _labels(values):
    return [v[1:] for v in values if v.startswith(":")]


def _names(targets, kind):
    return {n for n, t in targets.items() if t.kind == kind}


@pytest.mark.parametrize("kind,what", [
    ("py_library", f"{PACKAGE}/**/*.py and test helper"),
    ("py_test", "tests/*_test.py"),
    ("py_binary", "bin/*.py"),
])
def test_one_target_per_file_and_no_stale_targets(targets, expected, kind, what):
    want = {n for n, (k, _, _) in expected.items() if k == kind}
    have = _names(targets, kind)
    problems = [f"{expected[n][1]} has no {kind} (want target :{n})" for n in sorted(want - have)]
    problems += [f":{n} (BUILD line {targets[n].line}) is stale: no {what} file for it"
                 for n in sorted(have - want)]
    assert not problems, "\n".join(problems)
    for name in sorted(want):
        srcs = targets[name].attrs.get("srcs", [])
        path = expected[name][1]
        want_srcs = [RUNNER, path] if kind == "py_test" else [path]
        assert srcs == want_srcs, f"BUILD :{name} should have srcs = {want_srcs}, has {srcs}"


def test_deps_are_the_imports(targets, expected):
    problems = []
    for name, (kind, path, want) in sorted(expected.items()):
        if name not in targets:
            continue  # reported by test_one_target_per_file_and_no_stale_targets
        have = targets[name].attrs.get("deps", [])
        if len(have) != len(set(have)):
            problems.append(f"{path} (:{name}): duplicate deps {sorted(have)}")
        have = set(_labels(have))
        if have != want:
            missing, extra = sorted(want - have), sorted(have - want)
            problems.append(f"{path} (:{name}, BUILD line {targets[name].line}): "
                            + (f"missing deps {[':' + d for d in missing]} " if missing else "")
                            + (f"extra deps {[':' + d for d in extra]}" if extra else ""))
    assert not problems, "BUILD deps differ from the imports:\n  " + "\n  ".join(problems)


def test_labels_resolve_and_files_exist(targets):
    problems = []
    for name, t in targets.items():
        for attr in ("srcs", "deps", "data"):
            for value in t.attrs.get(attr, []):
                if value.startswith(":"):
                    if value[1:] not in targets:
                        problems.append(f":{name} {attr}: no target {value}")
                    elif attr == "deps" and targets[value[1:]].kind != "py_library":
                        problems.append(f":{name} deps: {value} is a {targets[value[1:]].kind}")
                elif value.startswith("//") or value.startswith("@"):
                    problems.append(f":{name} {attr}: {value} (one package, no external repos)")
                elif not os.path.isfile(os.path.join(ROOT, value)):
                    problems.append(f":{name} {attr}: no file {value}")
    assert not problems, "\n".join(problems)


def test_deps_have_no_cycles(targets):
    """Bazel rejects cyclic deps (Python may tolerate a circular import; BUILD cannot)."""
    state, path = {}, []

    def visit(name):
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            cycle = path[path.index(name):] + [name]
            pytest.fail("dependency cycle: " + " -> ".join(":" + n for n in cycle))
        state[name] = "open"
        path.append(name)
        for dep in _labels(targets[name].attrs.get("deps", [])):
            if dep in targets:
                visit(dep)
        path.pop()
        state[name] = "done"

    for name in sorted(targets):
        visit(name)


def test_tests_run_through_pytest(targets, expected):
    for name in sorted(_names(targets, "py_test")):
        attrs = targets[name].attrs
        path = expected[name][1] if name in expected else f"tests/{name}.py"
        assert attrs.get("main") == RUNNER, f":{name} main should be {RUNNER}"
        assert attrs.get("args") == [f"$(rootpath {path})"], \
            f":{name} args should be ['$(rootpath {path})'] (the file pytest runs)"
        assert attrs.get("legacy_create_init") is False, \
            f":{name} needs legacy_create_init = False: tests/ is not a package (`import export_helpers`)"
        assert PYTEST_CONFIG in attrs.get("data", []), f":{name} data needs {PYTEST_CONFIG} (pytest settings)"


def test_binaries_name_their_main(targets, expected):
    for name in sorted(_names(targets, "py_binary")):
        assert targets[name].attrs.get("main") == expected[name][1], f":{name} main should be its file"


def test_tests_that_run_binaries_have_them_as_data(targets, expected):
    """A test that starts bin/<name>.py in a subprocess needs :<name> (and its runfiles) as data."""
    binaries = {_stem(p) for p in binary_files()}
    problems = []
    for name in sorted(_names(targets, "py_test") & set(expected)):
        sources = [expected[name][1]] + [expected[d][1] for d in expected[name][2]
                                         if d in expected and d in {_stem(p) for p in helper_files()}]
        mentioned = set()
        for path in sources:
            with open(os.path.join(ROOT, path)) as f:
                for node in ast.walk(ast.parse(f.read(), path)):
                    if isinstance(node, ast.Constant) and isinstance(node.value, str):
                        stem = node.value[:-3] if node.value.endswith(".py") else node.value
                        if os.path.basename(stem) in binaries:
                            mentioned.add(os.path.basename(stem))
        have = set(_labels(targets[name].attrs.get("data", []))) & binaries
        if have != mentioned:
            problems.append(f"{expected[name][1]} runs binaries {sorted(mentioned)}; "
                            f"data of :{name} has {sorted(have)}")
    assert not problems, "\n".join(problems)


def test_tests_have_the_files_they_name_as_data(targets, expected):
    """A string in a test (or its helpers) naming a file of the tree, e.g. "README.md", which the test
    reads: under bazel test only its srcs and data are there. (Under bazel this check sees only the
    files in :build_test's data; run by pytest in the checkout, it sees them all.)"""
    helpers = {_stem(p) for p in helper_files()}
    problems = []
    for name in sorted(_names(targets, "py_test") & set(expected)):
        # conftest reads BUILD for the pytest tiers only where it exists (pytest in the checkout);
        # under Bazel, --config=ci filters by size and tag itself.
        sources = [expected[name][1]] + [expected[d][1] for d in expected[name][2]
                                         if d in helpers and d != "conftest"]
        named = set()
        for path in sources:
            with open(os.path.join(ROOT, path)) as f:
                named.update(n.value for n in ast.walk(ast.parse(f.read(), path))
                             if isinstance(n, ast.Constant) and isinstance(n.value, str)
                             and 0 < len(n.value) < 256 and "\n" not in n.value
                             and n.value not in targets  # under bazel, the runfiles hold their stubs
                             and os.path.isfile(os.path.join(ROOT, n.value)))
        attrs = targets[name].attrs
        missing = named - set(attrs.get("srcs", [])) - set(attrs.get("data", []))
        if missing:
            problems.append(f"{expected[name][1]} names {sorted(missing)}, not in the data of :{name}")
    assert not problems, "\n".join(problems)


def test_tags_are_known(targets):
    problems = [f":{n} (BUILD line {t.line}) has tags {sorted(set(t.attrs['tags']) - TAGS)}, "
                f"not one of {sorted(TAGS)}"
                for n, t in sorted(targets.items()) if set(t.attrs.get("tags", [])) - TAGS]
    assert not problems, "\n".join(problems)


def test_tests_that_start_processes_are_large(targets):
    """A test file importing subprocess starts Python processes: size = "large", tag "subprocess"."""
    problems = []
    for path in _test_files():
        t = targets.get(_stem(path))
        if t is not None and _imports_subprocess(path):
            if t.attrs.get("size") != "large" or "subprocess" not in t.attrs.get("tags", []):
                problems.append(f":{t.name} ({path} imports subprocess): needs size = \"large\" "
                                f"and tags = [\"subprocess\"]")
    assert not problems, "\n".join(problems)


def test_bundled_assets_are_data_of_the_module_that_loads_them(targets):
    assets = [p for p in _files(f"{PACKAGE}/assets/**/*") if p.endswith(ASSET_SUFFIXES)]
    assert assets, f"no bundled assets found under {PACKAGE}/assets/"
    owner = targets.get(ASSET_OWNER)
    assert owner is not None, f"no target :{ASSET_OWNER}"
    data = set(owner.attrs.get("data", []))
    assert not set(assets) - data, f":{ASSET_OWNER} data misses {sorted(set(assets) - data)}"
    for name, t in targets.items():
        if name != ASSET_OWNER and t.kind == "py_library":
            stray = [p for p in t.attrs.get("data", []) if p.startswith(f"{PACKAGE}/assets/")]
            assert not stray, f":{name} carries assets {stray}; they belong to :{ASSET_OWNER}"


def test_build_test_sees_the_tree_it_checks(targets):
    """Under bazel test the files checked here must be runfiles of :build_test."""
    data = set(targets["build_test"].attrs.get("data", []))
    sources = {"BUILD", PYTEST_CONFIG}
    for pattern in (f"{PACKAGE}/**/*.py", "tests/*.py", "bin/*.py", f"{PACKAGE}/assets/**/*"):
        sources.update(p for p in _files(pattern) if p.endswith((".py",) + ASSET_SUFFIXES))
    for t in targets.values():  # every file a target names (test_labels_resolve_and_files_exist)
        for attr in ("srcs", "data"):
            sources.update(v for v in t.attrs.get(attr, []) if not v.startswith((":", "//", "@")))
    assert not sources - data, f":build_test data misses {sorted(sources - data)}"


def test_import_rule_on_a_made_up_package(tmp_path):
    """The dependency rule of BUILD's header, on a package `ddss_tf` with a.b, a.c and d."""
    modules = {"ddss_tf": "ddss_tf/__init__.py", "ddss_tf.a": "ddss_tf/a/__init__.py",
               "ddss_tf.a.b": str(tmp_path / "b.py"), "ddss_tf.a.c": "ddss_tf/a/c.py",
               "ddss_tf.d": "ddss_tf/d.py"}
    (tmp_path / "b.py").write_text(
        "from ddss_tf import __version__, d\n"  # an attribute of the root package, and a module
        "from . import c\n"                      # relative: ddss_tf.a.c, own parent ddss_tf.a left out
        "def f():\n    import ddss_tf.a.c as late\n")
    assert local_imports(str(tmp_path / "b.py"), modules) == ({"ddss_tf", "d", "a_c"}, set())
    (tmp_path / "t.py").write_text("from ddss_tf.a import c, name\nimport helper\nimport ddss_tf.e\n")
    assert local_imports(str(tmp_path / "t.py"), modules, helpers={"helper"}) == (
        {"ddss_tf", "a", "a_c", "helper"}, {"ddss_tf.e"})
