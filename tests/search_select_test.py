"""--select=best: the search keeps the coefficients with the lowest validation FID (the start
included), never a NaN, resumes mid-evaluation as if uninterrupted, and reads old work
directories as select=last. The kept step follows a scripted validation sequence; the real
validation FID is recomputed independently on the validation seed."""

import json
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import evaluation, export, interrupt
from ddss_tf.noise import VALIDATION_SEED
from ddss_tf.search import SearchConfig, run_search
from ddss_tf.search import run as run_lib
from ddss_tf.search import workdir as workdir_lib
from ddss_tf.search.run import Run
from search_helpers import QUIET, sigint_at, tiny_config, values

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _scripted_validation(monkeypatch, scripted):
    """Replace the validation FID of step s by scripted[s] (the real one is recorded, with
    the sampler's variables it was computed on): {step: (real fid, variables)}."""
    seen = {}
    original = run_lib.BestCoefficients.consider

    def consider(self, layer, step, fid):
        seen[step] = (fid, values(layer.trainable_variables))
        return original(self, layer, step, scripted[step])

    monkeypatch.setattr(run_lib.BestCoefficients, "consider", consider)
    return seen


def _coefficients(workdir):
    with open(os.path.join(workdir, "coefficients.json")) as f:
        return json.load(f)["variables"]


def test_select_best_keeps_the_coefficients_with_the_lowest_validation_fid(tmp_path,
                                                                           monkeypatch):
    cfg = tiny_config(train_steps=4, eval_every=1, select="best", learning_rate=5e-2)
    seen = _scripted_validation(monkeypatch, {0: 4.0, 1: 3.0, 2: 1.0, 3: 2.0, 4: 5.0})
    results = run_search(cfg, str(tmp_path / "best"), log=QUIET)
    assert sorted(seen) == [0, 1, 2, 3, 4]  # the untrained sampler is a candidate too
    assert results["selected"] == dict(step=2, validation_fid=1.0,
                                       validation_samples=cfg.eval_samples)
    assert "step 2's" in (tmp_path / "best" / "results.md").read_text()
    # The kept coefficients are step 2's, not the last step's.
    setup = Run(cfg, tempfile.gettempdir(), QUIET)
    kept = _coefficients(tmp_path / "best")
    export_layer = export.load_coefficients(str(tmp_path / "best" / "coefficients.json"),
                                                    setup.evaluator.denoiser, remat=False)
    for got, want in zip(values(export_layer.trainable_variables), seen[2][1]):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(seen[2][1], seen[4][1]))
    # The validation FID is the scorer's on eval_samples samples of the validation seed, which
    # are not the evaluation's.
    imgs = evaluation.sample(export_layer, cfg.eval_samples, (8, 8, 1),
                             seed=VALIDATION_SEED)
    np.testing.assert_allclose(seen[2][0], setup.evaluator.scorer(imgs)["fid"], rtol=1e-5)
    first = evaluation.sample(export_layer, 4, (8, 8, 1))
    assert not np.allclose(imgs[:4], first)
    # select="last" keeps the last step's (the same run otherwise).
    last = run_search(tiny_config(train_steps=4, eval_every=1, learning_rate=5e-2, select="last"),
                      str(tmp_path / "last"), log=QUIET)
    assert last["selected"] is None
    assert _coefficients(tmp_path / "last") != kept


def test_select_best_never_keeps_a_nan_validation(tmp_path, monkeypatch):
    cfg = tiny_config(train_steps=2, eval_every=1, select="best")
    _scripted_validation(monkeypatch, {0: float("nan"), 1: float("nan"), 2: float("nan")})
    results = run_search(cfg, str(tmp_path / "run"), log=QUIET)
    assert results["selected"] is None  # the last step's coefficients, as with select="last"
    run_search(tiny_config(train_steps=2, eval_every=1, select="last"), str(tmp_path / "last"),
               log=QUIET)
    assert _coefficients(tmp_path / "run") == _coefficients(tmp_path / "last")


def test_select_best_resumed_mid_evaluation_equals_uninterrupted(tmp_path, monkeypatch):
    """A checkpoint is saved before its step's evaluation: a run that dies in the evaluation
    of step 2 resumes from ckpt-2 and validates step 2 then."""
    cfg = tiny_config(train_steps=4, eval_every=2, checkpoint_every=2, select="best",
               learning_rate=5e-2)
    scripted = {0: 3.0, 2: 1.0, 4: 2.0}
    _scripted_validation(monkeypatch, scripted)
    full = run_search(cfg, str(tmp_path / "full"), log=QUIET)
    assert full["selected"]["step"] == 2

    original = run_lib.Run.validate

    def dies(self, step):
        if step == 2:
            raise RuntimeError("killed in the evaluation")
        return original(self, step)

    monkeypatch.setattr(run_lib.Run, "validate", dies)
    with pytest.raises(RuntimeError, match="killed"):
        run_search(cfg, str(tmp_path / "resumed"), log=QUIET)
    ckpt_dir = str(tmp_path / "resumed" / "checkpoints")
    assert tf.train.latest_checkpoint(ckpt_dir).endswith("ckpt-2")
    monkeypatch.setattr(run_lib.Run, "validate", original)
    resumed = run_search(cfg, str(tmp_path / "resumed"), log=QUIET)
    assert resumed["selected"] == full["selected"]
    assert _coefficients(tmp_path / "resumed") == _coefficients(tmp_path / "full")


def test_select_best_makes_the_periodic_evaluation_part_of_the_search(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    sigint_at(monkeypatch, 1)
    with pytest.raises(interrupt.Interrupted):
        run_search(tiny_config(select="best"), workdir, log=QUIET)
    with pytest.raises(ValueError, match="different eval_samples"):
        run_search(tiny_config(select="best", eval_samples=32), workdir, log=QUIET)
    with pytest.raises(ValueError, match="different select"):
        run_search(tiny_config(select="last"), workdir, log=QUIET)


def test_select_defaults_and_work_directories_from_before_it(tmp_path):
    assert SearchConfig().select == "best" and SearchConfig(num_steps=5).select == "best"
    assert SearchConfig(objective="ld3", family="unipc").select == "last"  # LD3 as published
    # A work directory from before `select` kept its last step's coefficients: it reads so.
    old = json.loads(SearchConfig(select="last").to_json())
    del old["select"]
    assert workdir_lib.differing_settings(old, SearchConfig(select="last")) == []
    assert workdir_lib.differing_settings(old, SearchConfig()) == ["select"]
