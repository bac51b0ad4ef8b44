"""The cross-replica KID loss on 2 logical CPU devices equals the single-device global-batch loss,
and the per-replica gradients of loss / num_replicas add up to the global gradient.

tests/conftest.py splits the CPU into 2 logical devices before TensorFlow starts.
"""

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import metrics
from ddss_tf.search import strategies

GLOBAL_BATCH, REAL, PIXELS, DIM = 8, 6, 16, 5


@pytest.fixture(scope="module")
def strategy():
    """One strategy for the module: several MirroredStrategy objects issuing all_gather in one
    process can hand out clashing collective instance keys (seen with TF 2.21)."""
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs 2 logical CPU devices (configured in tests/conftest.py)")
    strategy = strategies.make("mirrored")  # the process-wide one the search uses too
    assert strategy.num_replicas_in_sync == 2
    return strategy


def make_problem(seed):
    """A tiny differentiable 'sampler + feature network' in float64: theta -> features."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(GLOBAL_BATCH, PIXELS))
    w = tf.constant(rng.normal(size=(PIXELS, DIM)) / 3.0)
    real = tf.constant(rng.normal(0.2, 1.0, size=(REAL, DIM)))
    theta0 = rng.normal(size=(PIXELS,))

    def features(theta, z_local):
        images = tf.tanh(z_local * theta)  # the "sampler"
        return tf.tanh(tf.matmul(images, w))  # the "feature network"
    return z, real, theta0, features


@pytest.mark.parametrize("kernel, gather_real", [("linear", False), ("cubic", False), ("cubic", True)])
def test_cross_replica_loss_and_summed_gradients_equal_global_batch(strategy, kernel, gather_real):
    z, real, theta0, features = make_problem(0)
    with strategy.scope():
        theta = tf.Variable(theta0)
    def shard(values, ctx):
        """Replica r holds rows [r k, (r + 1) k) of values, k = len(values) / 2."""
        k = len(values) // 2
        return values[ctx.replica_id_in_sync_group * k:(ctx.replica_id_in_sync_group + 1) * k]

    local_z = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(shard(z, ctx)))
    local_real = strategy.experimental_distribute_values_from_function(
        lambda ctx: shard(real, ctx) if gather_real else real)

    def replica_step(z_local, real_local):
        ctx = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            loss = metrics.cross_replica_kid_loss(
                features(theta, z_local), real_local, kernel, gather_real=gather_real)
            scaled = loss / ctx.num_replicas_in_sync
        return loss, tape.gradient(scaled, theta)

    @tf.function
    def step():
        loss, grad = strategy.run(replica_step, args=(local_z, local_real))
        return strategy.experimental_local_results(loss), strategy.reduce("SUM", grad, axis=None)

    replica_losses, summed_grad = step()

    single = tf.Variable(theta0)
    with tf.GradientTape() as tape:
        global_loss = metrics.kid_loss(features(single, tf.constant(z)), real, kernel)
    global_grad = tape.gradient(global_loss, single)

    assert len(replica_losses) == 2
    for value in replica_losses:
        np.testing.assert_allclose(value.numpy(), global_loss.numpy(), rtol=1e-12)
    np.testing.assert_allclose(summed_grad.numpy(), global_grad.numpy(), rtol=1e-10, atol=1e-14)
    assert np.any(global_grad.numpy() != 0)


def test_cross_replica_loss_without_strategy_is_the_plain_loss():
    z, real, theta0, features = make_problem(1)
    feats = features(tf.constant(theta0), tf.constant(z))
    np.testing.assert_allclose(metrics.cross_replica_kid_loss(feats, real).numpy(),
                               metrics.kid_loss(feats, real).numpy(), rtol=1e-14)
