"""The kid_cv objective (search.objectives.kid_cv): its loss and gradient against float64 NumPy
and a second TensorFlow computation, its start frozen while the sampler trains, its running
mean of the start's features over every batch drawn, its cost, and its resume."""

import tempfile

import numpy as np
import pytest
import tensorflow as tf

from search_helpers import QUIET, full_and_resumed, tiny_config, values
from ddss_tf import samplers
from ddss_tf.search import objectives, plan
from ddss_tf.search.run import Run

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _cfg(**kw):
    # From DDPM every noise scale is interior, so every variable has a gradient.
    return tiny_config(objective="kid_cv", num_steps=3, init="ddpm", **kw)


def _features(run, layer, x_T, z):
    return run.evaluator.extractor(layer(x_T, z)).numpy().astype(np.float64)


def _frozen_copy(layer):
    copy = samplers.from_config(dict(layer.get_config(), remat=False), layer.denoiser)
    copy.set_weights(layer.get_weights())
    return copy


def _gradient_of_mean(run, x_T, z, gap):
    """d/dtheta of 2 gap . mean_b phi(sampler(x_T, z)): the gradient kid_cv must give,
    computed on its own."""
    variables = run.trainer.variables
    with tf.GradientTape() as tape:
        mean = tf.reduce_mean(run.evaluator.extractor(run.layer(x_T, z)), 0)
        target = 2.0 * tf.reduce_sum(tf.constant(gap, tf.float32) * mean)
    return [g.numpy() for g in tape.gradient(target, variables)]


def test_the_loss_is_the_corrected_mean_distance_and_its_gradient_follows_the_sampler():
    run = Run(_cfg(), tempfile.gettempdir(), QUIET)
    trainer, loss = run.trainer, run.trainer.loss
    start = _frozen_copy(run.layer)
    mu_r = np.asarray(run.evaluator.reference.features, np.float64).mean(0)

    # Step 0: the start is the sampler, so mu_hat is the batch's own mean.
    x0, z0, inputs = trainer.step_inputs(0)
    got, _, grads = trainer.loss_and_gradients(x0, z0, inputs)
    m = _features(run, run.layer, x0, z0).mean(0)
    assert float(got) == pytest.approx(np.sum((m - mu_r) ** 2), rel=1e-4)
    for g, want in zip(grads, _gradient_of_mean(run, x0, z0, m - mu_r)):
        np.testing.assert_allclose(g, want, rtol=1e-3, atol=1e-6 * np.abs(want).max())
    np.testing.assert_allclose(loss.start_mean().numpy(), m, rtol=1e-5, atol=1e-6)

    # Move the sampler, then a second batch: M_0 is the mean of both batches' start features.
    for v in run.layer.trainable_variables:
        v.assign(v + tf.random.stateless_normal(v.shape, [1, 2], stddev=0.05))
    x1, z1, inputs = trainer.step_inputs(1)
    got, _, grads = trainer.loss_and_gradients(x1, z1, inputs)
    m0_first = _features(run, start, x0, z0).mean(0)
    m0 = _features(run, start, x1, z1).mean(0)
    m_theta = _features(run, run.layer, x1, z1).mean(0)
    M0 = (m0_first + m0) / 2
    gap = M0 + m_theta - m0 - mu_r
    assert float(got) == pytest.approx(np.sum(gap ** 2), rel=1e-4)
    assert float(loss.start_count.numpy()) == 2 * run.cfg.batch_size
    for g, want in zip(grads, _gradient_of_mean(run, x1, z1, gap)):
        np.testing.assert_allclose(g, want, rtol=1e-3, atol=1e-6 * np.abs(want).max())


def test_training_moves_the_sampler_and_leaves_the_start():
    run = Run(_cfg(), tempfile.gettempdir(), QUIET)
    before = values(run.layer.weights)
    run.trainer.train_step()
    start = run.trainer.loss.start
    assert all(np.array_equal(a, b) for a, b in zip(before, values(start.weights)))
    assert any(not np.array_equal(a, b) for a, b in zip(before, values(run.layer.weights)))
    assert not start.trainable_variables
    names = {v.name for v in run.trainer.variables}
    assert not names & {v.name for v in start.weights} - {v.name for v in run.layer.weights}


def test_a_kid_cv_search_counts_both_chains_and_resumes_exactly(tmp_path, monkeypatch):
    cfg = _cfg(train_steps=4)
    assert cfg.run_name() == "kid_cv_ggdm_pred_time_ddpm_k3"
    assert cfg.label().endswith("(KID, control variate)")
    full, coefficients, resumed = full_and_resumed(cfg, str(tmp_path), monkeypatch)
    assert full["search_network_evaluations"] == 2 * 4 * cfg.batch_size * cfg.num_steps
    # The start's running mean is checkpointed: without it the resumed steps' gradients differ.
    assert coefficients == resumed


def test_kid_cv_refuses_the_cubic_kernel_and_guidance():
    with pytest.raises(ValueError, match="linear kernel compares"):
        objectives.get("kid_cv").validate(_cfg(kernel="cubic"))
    assert "kid_cv" in objectives.names() and not objectives.get("kid_cv").guided


def test_the_plan_counts_the_start_chain_as_forward_evaluations():
    """The plan prints the start's chain beside the training's, at the forward rate: it is not
    differentiated."""
    cfg = _cfg(train_steps=4)
    steps = {name: (n, training) for name, n, training in plan.phases(
        cfg, objectives.get("kid_cv"), screen=False, reference=False)}
    chain = 4 * cfg.batch_size * cfg.num_steps
    assert steps["training"] == (chain, True)
    assert steps["training: the other chains (forward only)"] == (chain, False)
    kid = {name for name, _, _ in plan.phases(tiny_config(), objectives.get("kid"))}
    assert "training: the other chains (forward only)" not in kid
