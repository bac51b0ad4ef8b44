"""notebooks/ddss_colab_tpu.ipynb runs end to end: a real (tiny) search, its FID curve, the export.

The notebook is executed the way papermill would run it: a cell of tiny values is injected after its
"parameters" cell, and a Jupyter kernel on this interpreter (a kernelspec written into a temporary
JUPYTER_PATH, so no other Python can answer) runs every cell on CPU. Then the files the notebook
wrote and the outputs it displayed are checked against the work directory and the export.
"""

import ast
import base64
import json
import math
import os
import sys

import nbformat
import numpy as np
import tensorflow as tf
from nbclient import NotebookClient

from ddss_tf import sampling
from ddss_tf.search import SearchConfig
from ddss_tf.search.config import RECIPE_FIELDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "ddss_colab_tpu.ipynb")
KERNEL = "ddss-tf-notebook-test"
# Small enough for about a minute on 2 CPU cores; evaluations at steps 2 and 4 make a curve, and
# REFERENCE_STEPS = 5 keeps the many-step reference row cheap (an ODE solve of 5 steps).
TINY = dict(INSTALL=False, NUM_STEPS=3, INIT="ddim", TRAIN_STEPS=4, BATCH_SIZE=8, EVAL_EVERY=2,
            EVAL_SAMPLES=16, VALIDATION_SAMPLES=16, FINAL_SAMPLES=32, REFERENCE_STEPS=5,
            XLA=False, NUM_SHOW=12, SEED=3)
EVAL_STEPS = [2, 4]
# Parameter-cell knobs that are SearchConfig fields.
_KNOBS = dict(FAMILY="family", PRED="pred", TIME="time", NUM_STEPS="num_steps", INIT="init",
              TRAIN_STEPS="train_steps", BATCH_SIZE="batch_size", LEARNING_RATE="learning_rate",
              EVAL_EVERY="eval_every", EVAL_SAMPLES="eval_samples",
              VALIDATION_SAMPLES="validation_samples", FINAL_SAMPLES="final_samples",
              REFERENCE_STEPS="reference_steps", XLA="xla")


def _read():
    with open(NOTEBOOK) as f:
        return nbformat.read(f, as_version=4)


def _parameters(nb):
    """{name: value} assigned in the notebook's one "parameters" cell."""
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    values = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)[:80]
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def _inject(nb, values):
    """A copy of nb with a cell assigning `values` after the parameters cell (as papermill does)."""
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)  # a copy
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        source, id="injected-parameters", metadata={"tags": ["injected-parameters"]}))
    return nb


def _kernel_env(tmp_path, monkeypatch):
    """A kernelspec that starts this interpreter, and an environment that keeps the kernel's files
    (connection file, IPython history, reference-statistics cache) inside tmp_path."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "ddss_tf test kernel", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("DDSS_TF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend shows the plot
    monkeypatch.delenv("TF_CONFIG", raising=False)
    # The checkout under test, not another installed copy.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def _outputs(nb, cell_id):
    return next(c for c in nb.cells if c.get("id") == cell_id).outputs


def _text(outputs):
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def _pngs(outputs):
    return [base64.b64decode(o.data["image/png"]) for o in outputs
            if o.output_type in ("display_data", "execute_result") and "image/png" in o.data]


def _eval_scalars(logdir, tag):
    """{step: value} of one scalar in the event files (read another way than the notebook does)."""
    out = {}
    for name in sorted(os.listdir(logdir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    out[event.step] = float(tf.make_ndarray(value.tensor))
    return out


def test_notebook_is_committed_clean_with_the_main_job_as_defaults():
    nb = _read()
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear the outputs"
    params = _parameters(nb)
    missing = set(TINY) - set(params)
    assert not missing, f"the test sets knobs the notebook lacks: {sorted(missing)}"
    assert params["INSTALL"] is True and params["RUN_CIFAR10"] is False
    # The defaults are the main job: SearchConfig() (GGDM +PRED +TIME, K = 10, ...); the
    # recipe and the reference's steps are left to SearchConfig (None), whose values depend on K.
    main_job = SearchConfig()
    by_k = {knob for knob, field in _KNOBS.items() if field in RECIPE_FIELDS} | {
        "REFERENCE_STEPS"}
    for knob, field in _KNOBS.items():
        want = None if knob in by_k else getattr(main_job, field)
        assert params[knob] == want, (knob, params[knob], want)
    assert (params["NUM_STEPS"], params["FINAL_SAMPLES"]) == (10, 2000)
    for cell_id in ("connect", "search", "fid-curve", "samples", "results", "export-samples",
                    "cifar10"):
        assert any(c.get("id") == cell_id for c in code), f"no code cell with id {cell_id!r}"


def test_notebook_runs_a_search_plots_fid_and_samples_from_the_export(tmp_path, monkeypatch):
    _kernel_env(tmp_path, monkeypatch)
    workdir = tmp_path / "run"
    nb = _inject(_read(), dict(TINY, WORKDIR=str(workdir)))
    client = NotebookClient(nb, timeout=600, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()  # raises CellExecutionError, with the cell and traceback, if a cell fails
    finally:
        nbformat.write(nb, str(tmp_path / "executed.ipynb"))  # for a look when something fails

    # The search really ran on the injected settings and finished.
    with open(workdir / "results.json") as f:
        results = json.load(f)
    config = results["config"]
    want = SearchConfig(**{field: TINY[knob] for knob, field in _KNOBS.items() if knob in TINY})
    assert config == json.loads(want.to_json())  # the knobs, and defaults for everything else
    assert len(results["records"]) == 6
    for record in results["records"]:
        assert math.isfinite(record["fid"]) and math.isfinite(record["heldout"]), record
        assert record["num_samples"] == 32, record
    # No TPU here: the connect cell says so and the search ran on the default strategy.
    assert config["strategy"] == "default"
    assert "Falling back to the default strategy" in _text(_outputs(nb, "connect"))

    # FID against steps: the notebook printed the values the event files hold, and plotted them.
    fid = _eval_scalars(str(workdir / "tensorboard"), "eval/fid")
    assert sorted(fid) == EVAL_STEPS
    printed = _text(_outputs(nb, "fid-curve"))
    for step in EVAL_STEPS:
        assert math.isfinite(fid[step])
        assert f"{step:>6} {fid[step]:>12.4f}" in printed, printed
    assert len(_pngs(_outputs(nb, "fid-curve"))) == 1
    assert (workdir / "fid_vs_steps.png").stat().st_size > 1000

    # The grids shown are the search's own files; the table is results.md.
    with open(workdir / "samples" / "compare.png", "rb") as f:
        compare = f.read()
    with open(workdir / "samples" / f"step_{EVAL_STEPS[-1]:06d}.png", "rb") as f:
        last = f.read()
    assert _pngs(_outputs(nb, "samples")) == [compare, last]
    shown = [o.data.get("text/markdown") for o in _outputs(nb, "results") if "data" in o]
    assert shown[0] == (workdir / "results.md").read_text()

    # Samples from the export: right shape, in the data range, and exactly what the export gives.
    assert os.path.isfile(os.path.join(workdir, results["export"], "saved_model.pb"))
    with np.load(workdir / "export_samples.npz") as f:
        images = f["images"]
    assert images.shape == (TINY["NUM_SHOW"], 8, 8, 1) and images.dtype == np.float32
    assert np.all(np.isfinite(images)) and images.min() >= -1 and images.max() <= 1
    again, _ = sampling.draw(sampling.from_export(str(workdir / "export")), TINY["NUM_SHOW"],
                             seed=TINY["SEED"])
    np.testing.assert_array_equal(images, again)
    assert images.std() > 0.1  # digits, not a constant image
    with open(workdir / "export_samples.png", "rb") as f:
        assert _pngs(_outputs(nb, "export-samples")) == [f.read()]
    assert "RUN_CIFAR10 = False" in _text(_outputs(nb, "cifar10"))
