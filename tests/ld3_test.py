"""LD3 as a search objective (search.objectives.ld3, search.teacher): its loss and ball against
numpy, an untrained LD3 layer against its solver, a step that moves only the times and the x_T
offsets, and a search; the KID + teacher objective's loss and search."""

import json

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import benchmark, models, samplers
from ddss_tf import noise as noise_lib
from ddss_tf.search import SearchConfig, objectives, run_search, teacher
from ddss_tf.search.objectives import ld3
from ddss_tf.search.run import Run

pytestmark = pytest.mark.usefixtures("isolated_cache")
_QUIET = lambda *a: None  # noqa: E731


def _cfg(**kw):
    base = dict(family="dpm_solver_pp_2m", objective="ld3", time=True, num_steps=3,
                teacher_steps=10, ld3_pairs=12, ld3_radius=0.1, batch_size=4, train_steps=2,
                learning_rate=1e-2, xla=False, checkpoint_every=1, eval_every=1000,
                eval_samples=10, validation_samples=10, final_samples=10, reference_steps=10,
                clip_samples=False)  # the raw samples, as the references below compute them
    base.update(kw)
    return SearchConfig(**base)


def _name(variable):
    return variable.name.split(":")[0].split("/")[-1]


def test_soft_teacher_loss_is_the_mean_squared_feature_distance():
    rng = np.random.default_rng(0)
    student, teacher_ = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    want = np.mean([np.sum((s - t) ** 2) for s, t in zip(student, teacher_)])
    got = teacher.distance(tf.constant(student, tf.float32), tf.constant(teacher_, tf.float32))
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_offsets_are_projected_into_the_ball_one_sample_at_a_time():
    rng = np.random.default_rng(1)
    offsets = rng.normal(size=(4, 2, 2, 1)).astype(np.float32)
    offsets[1] *= 1e-3  # well inside the ball: unchanged
    radius = 0.5
    got = ld3.project_to_ball(tf.constant(offsets), radius).numpy()
    for o, g in zip(offsets, got):
        norm = np.linalg.norm(o)
        want = o if norm <= radius else o * radius / norm
        np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-7)
    assert ld3.radius(0.1, (8, 8, 1)) == pytest.approx(0.8)


@pytest.mark.parametrize("family", objectives.get("ld3").families())
def test_an_untrained_ld3_layer_is_its_solver_on_the_solvers_grid(family):
    cfg = _cfg(family=family, num_steps=4)
    assert cfg.stride == samplers.default_stride(family)
    assert cfg.loop is False and cfg.pred is False
    den, _ = models.load_denoiser("digits")
    layer, solver = cfg.build_sampler(den), samplers.create(family, den, num_steps=4)
    assert [_name(v) for v in layer.trainable_variables] == ["time_logits"]
    x_T, noise = noise_lib.draw(5, 4, [6, 8, 8, 1])
    # +TIME starts the grid's two end points 1e-6 model-time units inside (samplers.times),
    # and its times are float32.
    np.testing.assert_allclose(layer.query_times(), solver.query_times(), rtol=1e-6, atol=2e-6)
    np.testing.assert_allclose(layer(x_T, noise).numpy(), solver(x_T, noise).numpy(), atol=1e-4)


def test_a_step_moves_the_times_and_the_offsets_only(tmp_path):
    run = Run(_cfg(), str(tmp_path), _QUIET)
    pairs = run.trainer.loss.pairs
    assert pairs.x_T.shape == (12, 8, 8, 1) and pairs.features.shape[0] == 12
    # The teacher: DPM-Solver++(2M) with teacher_steps from the pairs' own x_T.
    solver = samplers.create("dpm_solver_pp_2m", run.evaluator.denoiser, num_steps=10,
                             remat=False)
    np.testing.assert_allclose(pairs.x0[:3], solver(pairs.x_T[:3]).numpy(), atol=1e-5)
    net = [w.numpy() for w in run.evaluator.net.weights]
    before = {_name(v): v.numpy() for v in run.trainer.variables}
    assert sorted(before) == ["ld3_offsets", "time_logits"]
    loss, norm = run.trainer.train_step()
    assert np.isfinite(loss) and norm > 0
    for v in run.trainer.variables:
        assert not np.array_equal(v.numpy(), before[_name(v)]), _name(v)
    for a, w in zip(net, run.evaluator.net.weights):
        np.testing.assert_array_equal(a, w.numpy())
    assert run.trainer.step.numpy() == 1


def test_the_benchmarks_ld3_rows_search_the_solvers_times_from_their_own_grids():
    cfg = benchmark.BenchmarkConfig()  # the template search: GGDM's settings
    names = benchmark.sampler_names()
    assert "ld3_dpm_solver_pp_2m" in names and "ld3_unipc" in names
    scfg = benchmark.LearnedRow("ld3_unipc", family="unipc", objective="ld3", time=True,
                                stride="").search_config(cfg, 5)
    scfg.validate()
    assert (scfg.run_name(), scfg.label()) == ("ld3_unipc_time_k5", "LD3 UniPC")
    assert (scfg.stride, scfg.loop, scfg.pred) == ("logsnr_uniform", False, False)


def test_settings_that_are_not_ld3_are_refused():
    for overrides, message in [(dict(time=False), "learns the times"),
                               (dict(family="ggdm"), "learns the times"),
                               (dict(objective="lpips"), "unknown objective"),
                               (dict(ld3_radius=-1.0), "ld3_radius must be >= 0")]:
        with pytest.raises(ValueError, match=message):
            _cfg(**overrides).validate()


def test_an_ld3_search_finishes_under_its_own_name(tmp_path):
    cfg = _cfg()
    assert cfg.run_name() == "ld3_dpm_solver_pp_2m_time_k3"
    results = run_search(cfg, str(tmp_path / cfg.run_name()), log=_QUIET)
    learned = [r for r in results["records"] if r["role"] == "learned"]
    assert [r["sampler"] for r in learned] == ["LD3 DPM-Solver++(2M)"]
    assert results["search_network_evaluations"] == 2 * 4 * 3 + 12 * 10
    with open(tmp_path / cfg.run_name() / "coefficients.json") as f:
        assert json.load(f)["family"] == "dpm_solver_pp_2m"


# ---- objective kid_teacher: DDSS's KID plus LD3's teacher distance ----

def _kid_teacher_cfg(**kw):
    return _cfg(**dict(dict(family="ggdm", objective="kid_teacher", pred=True, stride="",
                            teacher_weight=0.5, init="ddim", select="best"), **kw))


def _numpy_linear_kid_loss(gen, real_mean):
    n = len(gen)
    gram = gen @ gen.T
    within = (gram.sum() - np.trace(gram)) / (n * (n - 1))
    return within - 2.0 * float(np.mean(gen @ real_mean))


def test_the_kid_teacher_loss_is_kid_plus_the_weighted_teacher_distance(tmp_path):
    run = Run(_kid_teacher_cfg(), str(tmp_path), _QUIET)
    trainer, pairs = run.trainer, run.trainer.loss.pairs
    assert trainer.loss.checkpointed() == {} and pairs.x_T.shape == (12, 8, 8, 1)
    idx = np.array([3, 0, 7, 11])
    _, noise = noise_lib.draw(7, 3, [4, 8, 8, 1])
    # The student from the pairs' own x_T (whatever x_T the step drew), in the loss's space.
    gen = run.evaluator.extractor(run.layer(pairs.x_T[idx], noise)).numpy().astype(np.float64)
    real = np.asarray(run.evaluator.reference.features, np.float64).mean(0)
    kid = _numpy_linear_kid_loss(gen, real)
    distance = np.mean(np.sum((gen - pairs.features[idx]) ** 2, axis=1))
    ignored_x_T = tf.zeros([4, 8, 8, 1])
    inputs = (trainer.loss.real, tf.constant(idx))
    loss, norm, grads = trainer.loss_and_gradients(ignored_x_T, noise, inputs)
    assert float(loss) == pytest.approx(kid + 0.5 * distance, rel=1e-4, abs=1e-4)
    assert float(norm) > 0 and all(np.all(np.isfinite(g)) for g in grads)

    # A step moves the sampler's coefficients only: no x_T offsets, the network frozen.
    names = sorted(_name(v) for v in trainer.variables)
    assert names == sorted(_name(v) for v in run.layer.trainable_variables)
    assert "ld3_offsets" not in names
    before = [v.numpy() for v in trainer.variables]
    net = [w.numpy() for w in run.evaluator.net.weights]
    loss, norm = trainer.train_step()
    assert np.isfinite(loss) and norm > 0
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, trainer.variables))
    for a, w in zip(net, run.evaluator.net.weights):
        np.testing.assert_array_equal(a, w.numpy())


def test_a_kid_teacher_search_is_named_and_costed_with_its_teacher(tmp_path):
    cfg = _kid_teacher_cfg()
    # kid_teacher is the default objective: its name is not in the directory's.
    assert (cfg.run_name(), cfg.label()) == ("ggdm_pred_time_ddim_k3",
                                             "DDSS GGDM +PRED +TIME from DDIM (KID + teacher)")
    results = run_search(cfg, str(tmp_path / cfg.run_name()), log=_QUIET)
    assert results["search_network_evaluations"] == 2 * 4 * 3 + 12 * 10
    learned = [r for r in results["records"] if r["role"] == "learned"]
    assert [r["sampler"] for r in learned] == ["DDSS GGDM +PRED +TIME from DDIM (KID + teacher)"]


def test_kid_teacher_settings_that_cannot_work_are_refused():
    for overrides, message in [(dict(teacher_weight=-1.0), "teacher_weight must be >= 0"),
                               (dict(family="unipc", pred=False), "nothing to learn"),
                               (dict(ld3_pairs=0), "ld3_pairs must be >= 1")]:
        with pytest.raises(ValueError, match=message):
            _kid_teacher_cfg(**overrides).validate()
