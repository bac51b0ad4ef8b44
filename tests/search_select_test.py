"""--select=best: the search keeps the coefficients with the lowest validation FID (the start
included), never a NaN, resumes mid-evaluation as if uninterrupted, and reads old work
directories as select=last. The kept step follows a scripted validation sequence; the real
validation FID is recomputed independently on the validation seed. --select=paired keeps the
start unless a candidate beats it in the paired resamples (their fraction against scipy's FID)."""

import dataclasses
import json
import os
import tempfile

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from ddss_tf import evaluation, export, interrupt, metrics
from ddss_tf.noise import VALIDATION_SEED
from ddss_tf.search import SearchConfig, objectives, plan, run_search
from ddss_tf.search import select as select_lib
from ddss_tf.search import workdir as workdir_lib
from ddss_tf.search.run import Run
from search_helpers import QUIET, sigint_at, tiny_config, values

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _scripted_validation(monkeypatch, scripted):
    """Replace the validation FID of step s by scripted[s] (the real one is recorded, with
    the sampler's variables it was computed on): {step: (real fid, variables)}."""
    seen = {}
    original = select_lib.Kept.consider

    def consider(self, layer, step, fid):
        seen[step] = (fid, values(layer.trainable_variables))
        return original(self, layer, step, scripted[step])

    monkeypatch.setattr(select_lib.Kept, "consider", consider)
    return seen


def _coefficients(workdir):
    with open(os.path.join(workdir, "coefficients.json")) as f:
        return json.load(f)["variables"]


def test_select_best_keeps_the_coefficients_with_the_lowest_validation_fid(tmp_path,
                                                                           monkeypatch):
    cfg = tiny_config(train_steps=4, eval_every=1, select="best", learning_rate=5e-2,
                      validation_samples=24)  # not eval_samples (16): validated on 24
    seen = _scripted_validation(monkeypatch, {0: 4.0, 1: 3.0, 2: 1.0, 3: 2.0, 4: 5.0})
    results = run_search(cfg, str(tmp_path / "best"), log=QUIET)
    assert sorted(seen) == [0, 1, 2, 3, 4]  # the untrained sampler is a candidate too
    assert results["selected"] == dict(step=2, validation_fid=1.0,
                                       validation_samples=cfg.validation_samples, select="best")
    assert "step 2's" in (tmp_path / "best" / "results.md").read_text()
    # The kept coefficients are step 2's, not the last step's.
    setup = Run(cfg, tempfile.gettempdir(), QUIET)
    kept = _coefficients(tmp_path / "best")
    export_layer = export.load_coefficients(str(tmp_path / "best" / "coefficients.json"),
                                                    setup.evaluator.denoiser, remat=False)
    for got, want in zip(values(export_layer.trainable_variables), seen[2][1]):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(seen[2][1], seen[4][1]))
    # The validation FID is the scorer's on validation_samples samples of the validation seed,
    # which are not the evaluation's.
    imgs = evaluation.sample(export_layer, cfg.validation_samples, (8, 8, 1),
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

    original = select_lib.Selection.validate

    def dies(self, step):
        if step == 2:
            raise RuntimeError("killed in the evaluation")
        return original(self, step)

    monkeypatch.setattr(select_lib.Selection, "validate", dies)
    with pytest.raises(RuntimeError, match="killed"):
        run_search(cfg, str(tmp_path / "resumed"), log=QUIET)
    ckpt_dir = str(tmp_path / "resumed" / "checkpoints")
    assert tf.train.latest_checkpoint(ckpt_dir).endswith("ckpt-2")
    monkeypatch.setattr(select_lib.Selection, "validate", original)
    resumed = run_search(cfg, str(tmp_path / "resumed"), log=QUIET)
    assert resumed["selected"] == full["selected"]
    assert _coefficients(tmp_path / "resumed") == _coefficients(tmp_path / "full")


def test_select_best_makes_the_periodic_evaluation_part_of_the_search(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    sigint_at(monkeypatch, 1)
    with pytest.raises(interrupt.Interrupted):
        run_search(tiny_config(select="best"), workdir, log=QUIET)
    with pytest.raises(ValueError, match="different validation_samples"):
        run_search(tiny_config(select="best", validation_samples=32), workdir, log=QUIET)
    with pytest.raises(ValueError, match="different select"):
        run_search(tiny_config(select="last"), workdir, log=QUIET)


def test_select_defaults_and_work_directories_from_before_it(tmp_path):
    assert SearchConfig().select == "paired" and SearchConfig(num_steps=5).select == "paired"
    assert SearchConfig(objective="ld3", family="unipc").select == "last"  # LD3 as published
    # A work directory from before `select` kept its last step's coefficients: it reads so.
    old = json.loads(SearchConfig(select="last").to_json())
    del old["select"]
    assert workdir_lib.differing_settings(old, SearchConfig(select="last")) == []
    assert workdir_lib.differing_settings(old, SearchConfig()) == ["select"]


def test_validation_samples_choose_what_is_kept_and_eval_samples_only_draw_the_curve():
    """With a selection, the validation's sample count is part of the search (another count may
    keep other coefficients); the periodic evaluation's is bookkeeping. A work directory from
    before `validation_samples` validated on its eval_samples, and reads so."""
    cfg = SearchConfig(num_steps=10, eval_samples=2000, validation_samples=5000)
    saved = json.loads(cfg.to_json())
    assert workdir_lib.differing_settings(dict(saved, eval_samples=512), cfg) == []
    assert workdir_lib.differing_settings(dict(saved, validation_samples=2000), cfg) == [
        "validation_samples"]
    old = dict(saved, eval_samples=2000)
    del old["validation_samples"]
    assert workdir_lib.differing_settings(old, cfg) == ["validation_samples"]
    assert workdir_lib.differing_settings(
        old, dataclasses.replace(cfg, validation_samples=2000)) == []
    last = SearchConfig(num_steps=10, select="last", validation_samples=5000)
    assert workdir_lib.differing_settings(
        dict(json.loads(last.to_json()), validation_samples=16), last) == []
    # The plan: one validation at the start and one per evaluated step, on validation_samples;
    # the periodic evaluation on eval_samples.
    steps = {name: n for name, n, _ in plan.phases(cfg, objectives.get(cfg.objective),
                                                    screen=False, reference=False)}
    evaluations = -(-cfg.train_steps // cfg.eval_every)
    assert steps["validation"] == (evaluations + 1) * 5000 * cfg.num_steps
    assert steps["periodic evaluation"] == evaluations * 2000 * cfg.num_steps


# ---- select=paired: a candidate must beat the start with confidence --------------------------

def _scripted_pairs(monkeypatch, fids, confidences):
    """Validation FIDs {step: fid} (the real features kept) and paired confidences {step: c}."""
    original = select_lib.Selection._score
    step_of = {}

    def score(self, step):
        step_of["now"] = step
        _, features = original(self, step)
        return fids[step], features

    monkeypatch.setattr(select_lib.Selection, "_score", score)
    monkeypatch.setattr(select_lib.Selection, "_confidence",
                        staticmethod(lambda *a: confidences[step_of["now"]]))


def test_select_paired_keeps_the_start_when_no_candidate_beats_it_with_confidence(
        tmp_path, monkeypatch):
    # Every later step has a lower validation FID than the start, but beats it only as often as
    # a coin toss: the start is kept, its coefficients exactly.
    cfg = tiny_config(train_steps=3, eval_every=1, select="paired", learning_rate=5e-2)
    _scripted_pairs(monkeypatch, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0}, {1: 0.5, 2: 0.6, 3: 0.94})
    results = run_search(cfg, str(tmp_path / "coin"), log=QUIET)
    assert results["selected"]["step"] == 0
    assert "no step beat the start in 95% of the paired resamples" in (
        tmp_path / "coin" / "results.md").read_text()
    start = Run(cfg, tempfile.gettempdir(), QUIET).layer
    got = export.load_coefficients(str(tmp_path / "coin" / "coefficients.json"),
                                   start.denoiser, remat=False)
    for a, b in zip(values(got.trainable_variables), values(start.trainable_variables)):
        np.testing.assert_array_equal(a, b)
    # With confidence, the lowest FID among the confident candidates is kept.
    _scripted_pairs(monkeypatch, {0: 4.0, 1: 3.0, 2: 2.0, 3: 1.0}, {1: 0.99, 2: 0.97, 3: 0.5})
    results = run_search(cfg, str(tmp_path / "sure"), log=QUIET)
    assert results["selected"]["step"] == 2


def _fid64(a, mean, cov):
    mu, c = a.mean(0), np.cov(a, rowvar=False)
    root = scipy.linalg.sqrtm(c @ cov).real
    return float(((mu - mean) ** 2).sum() + np.trace(c + cov - 2 * root))


def test_paired_fid_confidence_is_the_fraction_of_paired_resamples_won():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(3000, 6))
    mean, cov = ref.mean(0), np.cov(ref, rowvar=False)
    start = rng.normal(size=(400, 6)) + 0.15          # a little off the data
    better = start - 0.1                               # the same samples, moved closer
    worse = start + 0.3
    want, draws = 0, np.random.default_rng(0)
    for _ in range(50):  # the same resamples as the function's (seed 0), scipy's FID
        rows = draws.integers(0, 400, 400)
        want += _fid64(better[rows], mean, cov) < _fid64(start[rows], mean, cov)
    got = metrics.paired_fid_confidence(better, start, mean, cov, resamples=50, seed=0)
    assert got == want / 50 and got > 0.95
    assert metrics.paired_fid_confidence(worse, start, mean, cov, resamples=50) < 0.05
    assert metrics.paired_fid_confidence(start, start, mean, cov, resamples=50) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        metrics.paired_fid_confidence(start[:10], start, mean, cov)
