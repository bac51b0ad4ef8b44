"""The fid_cv objective (search.objectives.fid_cv): its loss against float64 NumPy / SciPy's
sqrtm, its gradient against a second TensorFlow computation (the nuclear norm of the centred
features), its running statistics of the start, its cost, its resume and its refusals."""

import tempfile

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from search_helpers import QUIET, full_and_resumed, tiny_config
from ddss_tf import samplers
from ddss_tf.search import objectives
from ddss_tf.search.run import Run

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _cfg(**kw):
    # From DDPM every noise scale is interior, so every variable has a gradient.
    return tiny_config(objective="fid_cv", num_steps=3, init="ddpm", **kw)


def _features(run, layer, x_T, z):
    return run.evaluator.extractor(layer(x_T, z)).numpy().astype(np.float64)


def _fid(mu, cov, real):
    """The Frechet distance by SciPy's general matrix square root (float64)."""
    mu_r, cov_r = real.mean(0), np.cov(real, rowvar=False)
    root = scipy.linalg.sqrtm(cov @ cov_r)
    return float(np.sum((mu - mu_r) ** 2) + np.trace(cov) + np.trace(cov_r)
                 - 2 * np.real(np.trace(root)))


def _batch_fid_gradient(run, x_T, z, real):
    """d/dtheta of the batch's FID, with Tr sqrt(R C R) as the nuclear norm of X_c R /
    sqrt(n - 1) (X_c: the centred features): a second computation, by SVD of the features
    rather than eigenvalues of a covariance."""
    root_r = tf.constant(scipy.linalg.sqrtm(np.cov(real, rowvar=False)).real, tf.float64)
    mu_r = tf.constant(real.mean(0), tf.float64)
    trace_r = float(np.trace(np.cov(real, rowvar=False)))
    with tf.GradientTape() as tape:
        f = tf.cast(run.evaluator.extractor(run.layer(x_T, z)), tf.float64)
        n = tf.cast(tf.shape(f)[0], tf.float64)
        centred = (f - tf.reduce_mean(f, 0)) / tf.sqrt(n - 1.0)
        nuclear = tf.reduce_sum(tf.linalg.svd(tf.matmul(centred, root_r), compute_uv=False))
        gap = tf.reduce_mean(f, 0) - mu_r
        fid = (tf.reduce_sum(gap * gap) + tf.reduce_sum(centred * centred) + trace_r
               - 2.0 * nuclear)
    return [g.numpy() for g in tape.gradient(fid, run.trainer.variables)]


def test_the_loss_is_the_fid_of_the_corrected_statistics_and_its_gradient_the_batch_fids():
    run = Run(_cfg(), tempfile.gettempdir(), QUIET)
    trainer, loss = run.trainer, run.trainer.loss
    start = samplers.forward_copy(run.layer)
    real = np.asarray(run.evaluator.reference.features, np.float64)

    # Step 0: the start is the sampler, so the statistics are the batch's own.
    x0, z0, inputs = trainer.step_inputs(0)
    got, _, grads = trainer.loss_and_gradients(x0, z0, inputs)
    f = _features(run, run.layer, x0, z0)
    assert float(got) == pytest.approx(_fid(f.mean(0), np.cov(f, rowvar=False), real), rel=1e-3)
    for g, want in zip(grads, _batch_fid_gradient(run, x0, z0, real)):
        np.testing.assert_allclose(g, want, rtol=2e-3, atol=1e-5 * np.abs(want).max())

    # Move the sampler, then a second batch: M_0 and C_0 are over both batches' start
    # features, and the batch's own statistics are corrected by the start's on its noise.
    for v in run.layer.trainable_variables:
        v.assign(v + tf.random.stateless_normal(v.shape, [1, 2], stddev=0.05))
    x1, z1, inputs = trainer.step_inputs(1)
    got, _, _ = trainer.loss_and_gradients(x1, z1, inputs)
    both = np.concatenate([_features(run, start, x0, z0), _features(run, start, x1, z1)])
    f0, f1 = _features(run, start, x1, z1), _features(run, run.layer, x1, z1)
    mean_0, cov_0 = loss.start_statistics()
    np.testing.assert_allclose(mean_0.numpy(), both.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov_0.numpy(), np.cov(both, rowvar=False), rtol=1e-4,
                               atol=1e-6 * np.abs(np.cov(both, rowvar=False)).max())
    mu = both.mean(0) + f1.mean(0) - f0.mean(0)
    cov = np.cov(both, rowvar=False) + np.cov(f1, rowvar=False) - np.cov(f0, rowvar=False)
    eig, vec = np.linalg.eigh(cov)
    cov = (vec * np.clip(eig, 0, None)) @ vec.T
    assert float(got) == pytest.approx(_fid(mu, cov, real), rel=1e-3)
    assert float(loss.start_count.numpy()) == 2 * run.cfg.batch_size


def test_a_fid_cv_search_counts_both_chains_and_resumes_exactly(tmp_path, monkeypatch):
    cfg = _cfg(train_steps=4)
    assert cfg.run_name() == "fid_cv_ggdm_pred_time_ddpm_k3"
    assert cfg.label().endswith("(FID, control variate)")
    full, coefficients, resumed = full_and_resumed(cfg, str(tmp_path), monkeypatch)
    assert full["search_network_evaluations"] == 2 * 4 * cfg.batch_size * cfg.num_steps
    # The start's running statistics are checkpointed: without them the resumed steps differ.
    assert coefficients == resumed


def test_fid_cv_refuses_several_replicas_and_a_kernel():
    objective = objectives.get("fid_cv")
    assert "fid_cv" in objectives.names() and not objective.guided
    with pytest.raises(ValueError, match="runs on one replica, got 2"):
        objective.loss(_cfg(), None, 2, QUIET)
    with pytest.raises(ValueError, match="takes no kernel; got kernel 'cubic'"):
        objective.validate(_cfg(kernel="cubic"))
