"""Fingerprint what a search and a benchmark write, to show that a refactor changed no output.

    PYTHONPATH=. python tools/identity_check.py --out=/tmp/before.json   # at the old commit
    PYTHONPATH=. python tools/identity_check.py --out=/tmp/after.json    # at the new one
    python tools/identity_check.py --compare /tmp/before.json /tmp/after.json

Runs tiny searches on the bundled models (K = 3, batch 8, 4 steps, 16 evaluation samples) for
every search objective (KID, LD3, KID + teacher, a guided KID search and one across guidance
scales) and a tiny benchmark (its fixed rows and a learned row), then records the SHA-256 of
every coefficients.json and of results.json with what legitimately differs between two runs
taken out (wall-clock seconds, the work directory's absolute path). About 6 minutes on 2 cores.
"""

import hashlib
import json
import os
import re
import sys
import tempfile

from absl import app, flags

flags.DEFINE_string("out", None, "Write the fingerprints here (JSON).")
flags.DEFINE_multi_string("compare", None, "Two fingerprint files to compare (give it twice).")
FLAGS = flags.FLAGS

_TINY = dict(num_steps=3, batch_size=8, train_steps=4, xla=False, checkpoint_every=2,
             eval_every=2, eval_samples=16, final_samples=16, reference_steps=10,
             teacher_steps=8, ld3_pairs=16)
_SEARCHES = {
    "kid": dict(),
    "kid_cubic_last": dict(kernel="cubic", select="last", init="ddpm"),
    "ld3": dict(family="unipc", objective="ld3", time=True, stride=""),
    "kid_teacher": dict(objective="kid_teacher"),
    "kid_unipc_start": dict(init="unipc"),
    "guided": dict(model="digits_cond", guidance_scale=1.5),
    "guided_across": dict(model="digits_cond", guidance_scale=[0.0, 2.0]),
}


def _scrub(value, workdir):
    """value with the wall-clock entries dropped and the work directory's path made relative."""
    if isinstance(value, dict):
        return {k: _scrub(v, workdir) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_scrub(v, workdir) for v in value]
    if isinstance(value, str):
        return value.replace(workdir, "<workdir>")
    return value


def _digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _fingerprint(workdir, names):
    """{name: SHA-256} of JSON files (scrubbed), Markdown (wall-clock seconds and the work
    directory's path taken out) and other files (their bytes)."""
    out = {}
    for name in names:
        path = os.path.join(workdir, name)
        if not os.path.exists(path):
            out[name] = None
        elif name.endswith(".json"):
            with open(path) as f:
                out[name] = _digest(_scrub(json.load(f), workdir))
        elif name.endswith(".md"):
            with open(path) as f:
                text = re.sub(r"\d+ s of training", "<seconds> of training", f.read())
            text = text.split("What each learned sampler cost")[0]  # its minutes column
            out[name] = _digest(text.replace(workdir, "<workdir>"))
        else:
            with open(path, "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def _bench_settings():
    """The tiny searches' settings as the BenchmarkConfig takes them: its template (and, where
    it has row_settings, the recipe settings every row takes)."""
    from ddss_tf import benchmark
    from ddss_tf.search import SearchConfig

    if "row_settings" not in {f.name for f in __import__("dataclasses").fields(
            benchmark.BenchmarkConfig)}:
        return dict(search=SearchConfig(**dict(_TINY, train_steps=None)))
    recipe = ("batch_size", "eval_every", "eval_samples")
    return dict(batch_size=_TINY["batch_size"],
                row_settings={k: _TINY[k] for k in recipe[1:]},
                search=SearchConfig(**{k: v for k, v in _TINY.items()
                                       if k not in recipe + ("train_steps",)}))


def _run(root):
    from ddss_tf import benchmark
    from ddss_tf.search import SearchConfig, run_search

    quiet = lambda *a: None  # noqa: E731
    prints = {}
    for name, settings in _SEARCHES.items():
        workdir = os.path.join(root, name)
        run_search(SearchConfig(**dict(_TINY, **settings)), workdir, log=quiet)
        prints[f"search/{name}"] = _fingerprint(workdir, [
            "coefficients.json", "results.json", "results.md", "samples/compare.png"])
        print(name, prints[f"search/{name}"], flush=True)
    bench = benchmark.BenchmarkConfig(
        samplers=("ddim_quadratic", "unipc", "unipc_quadratic", "ggdm_pred_time",
                  "ggdm_pred_time_unipc", "ggdm_pred_time_kid_teacher", "ld3_unipc",
                  "training_data"),
        num_steps=(3, 6), num_samples=24, train_steps=2, **_bench_settings())
    workdir = os.path.join(root, "benchmark")
    benchmark.run(bench, workdir, log=quiet)
    prints["benchmark"] = _fingerprint(workdir, ["results.json", "table.md"])
    print("benchmark", prints["benchmark"], flush=True)
    return prints


def main(argv):
    del argv
    if FLAGS.compare:
        if len(FLAGS.compare) != 2:
            raise app.UsageError("--compare takes two files")
        a, b = (json.load(open(p)) for p in FLAGS.compare)
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        print("identical" if not diff else "differ: " + ", ".join(diff))
        return 0 if not diff else 1
    if not FLAGS.out:
        raise app.UsageError("give --out (or --compare twice)")
    root = tempfile.mkdtemp(prefix="ddss_identity_")
    os.environ["DDSS_TF_CACHE"] = os.path.join(root, "cache")
    prints = _run(root)
    with open(FLAGS.out, "w") as f:
        json.dump(prints, f, indent=1, sort_keys=True)
    print(f"fingerprints in {FLAGS.out} (work directories in {root})")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
