"""A sampler over a (tiny) Keras eps-model: the network stays frozen and out of the layer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import denoisers
from ddss_tf import noise as noise_lib
from ddss_tf import samplers
from ddss_tf import schedules

import toy_networks

K = 4
SHAPE = [3, 4, 4, 1]


@pytest.fixture(scope="module")
def setup():
    sched = schedules.linear_beta(1000)
    model = toy_networks.sinusoidal_eps_model(SHAPE[1:], seed=0)
    return model, denoisers.from_keras_model(model, sched)


def _loss(layer, x_T, noise):
    return tf.reduce_mean(tf.square(layer(x_T, noise)))


def test_network_is_frozen_and_not_tracked(setup):
    model, den = setup
    layer = samplers.create("ggdm", den, num_steps=K, pred=True, time=True)
    own = {"time_logits", "mu_x0_logits", "mu_logits", "mu_skip", "sigma_logits", "pred_a_logits",
           "pred_b_logits"}
    assert {v.name for v in layer.trainable_variables} == own
    assert len(layer.weights) == len(own)
    # Nothing else is tracked (no sub-layer, the network included): the layer's checkpoint
    # children are its own variables.
    assert set(tf.train.TrackableView(layer).children(layer)) == own
    network_ids = {id(v) for v in model.weights}
    assert not network_ids & {id(v) for v in layer.weights}
    x_T, noise = noise_lib.draw(0, K, SHAPE)
    before = [w.copy() for w in model.get_weights()]
    optimizer = keras.optimizers.Adam(1e-2)
    for _ in range(2):
        with tf.GradientTape(persistent=True) as tape:
            loss = _loss(layer, x_T, noise)
        # The network's weights enter as stop-gradient values: no gradient reaches them.
        assert all(g is None for g in tape.gradient(loss, model.weights))
        grads = tape.gradient(loss, layer.trainable_variables)
        del tape
        optimizer.apply_gradients(zip(grads, layer.trainable_variables))
    for b, a in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_keras_model_gradients_with_and_without_remat(setup):
    _, den = setup
    x_T, noise = noise_lib.draw(1, K, SHAPE)
    grads = {}
    for remat in (True, False):
        layer = samplers.create("ddim_sigma", den, num_steps=K, time=True, remat=remat)
        with tf.GradientTape() as tape:
            loss = _loss(layer, x_T, noise)
        grads[remat] = [g.numpy() for g in tape.gradient(loss, layer.trainable_variables)]
    for g_r, g_n in zip(grads[True], grads[False]):
        assert np.all(np.isfinite(g_r)) and np.any(g_r != 0)
        np.testing.assert_allclose(g_r, g_n, rtol=1e-5, atol=1e-7 * np.abs(g_n).max())


def test_keras_model_under_xla_and_baseline_reproduction(setup):
    _, den = setup
    x_T, noise = noise_lib.draw(2, K, SHAPE)
    layer = samplers.create("rddim", den, num_steps=K)
    eager = layer(x_T, noise).numpy()
    xla = tf.function(lambda x, z: layer(x, z), jit_compile=True)(x_T, noise).numpy()
    # float32 rounding, relative to values up to ~40 here (XLA fuses differently by CPU: on an
    # AVX2 machine one entry of 42.59 moved by 1.5e-5)
    np.testing.assert_allclose(xla, eager, rtol=1e-6, atol=1e-5)
    ddpm = samplers.create("ddpm", den, num_steps=K)(x_T, noise).numpy()
    np.testing.assert_allclose(eager, ddpm, atol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_remat_saves_memory_in_graph_mode(jit_compile):
    """Remat must hold in tf.function / XLA too, where op scheduling is dataflow-driven.

    (Peak from the CPU allocator; tools/bench_remat_memory.py measures the full picture.)
    """
    den = denoisers.from_keras_model(toy_networks.conv_eps_model(), schedules.linear_beta(1000))
    k = 16  # activations grow with K, remat holds one step: the gap is clear of allocator noise
    x_T, noise = noise_lib.draw(0, k, [8, 16, 16, 1])
    peaks = {}
    for remat in (True, False):
        layer = samplers.create("ggdm", den, num_steps=k, pred=True, remat=remat)

        @tf.function(jit_compile=jit_compile)
        def grads(x, z):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(layer(x, z)))
            return tape.gradient(loss, layer.trainable_variables)

        grads(x_T, noise)
        start = tf.config.experimental.get_memory_info("CPU:0")["current"]
        tf.config.experimental.reset_memory_stats("CPU:0")
        grads(x_T, noise)
        peaks[remat] = tf.config.experimental.get_memory_info("CPU:0")["peak"] - start
    assert peaks[True] < peaks[False] / 3, peaks


def test_forward_copy_samples_the_same_and_keeps_its_values(setup):
    """samplers.forward_copy: the same sampler (its config bar remat, its variables' values)
    whose values stay put when the original trains on."""
    _, den = setup
    layer = samplers.create("ggdm", den, num_steps=K, pred=True, time=True, remat=True)
    for v in layer.trainable_variables:  # away from the init, so a copy of the init fails
        v.assign(v + 0.1 * tf.random.stateless_normal(v.shape, [1, 2]))
    copy = samplers.forward_copy(layer)
    assert copy.get_config() == dict(layer.get_config(), remat=False)
    x_T, noise = noise_lib.draw(3, K, SHAPE)
    np.testing.assert_array_equal(copy(x_T, noise).numpy(), layer(x_T, noise).numpy())
    before = copy(x_T, noise).numpy()
    for v in layer.trainable_variables:
        v.assign_add(tf.ones_like(v))
    np.testing.assert_array_equal(copy(x_T, noise).numpy(), before)
    assert not np.allclose(layer(x_T, noise).numpy(), before)


def test_samplers_on_one_denoiser_share_one_network_trace():
    """Every sampler on a denoiser calls the same network function (samplers.frozen), so the
    start's screen of 36 samplers traces the network once per input shape, not 36 times; and
    each sampler still samples what it sampled alone."""
    from ddss_tf.samplers import frozen
    sched = schedules.linear_beta(1000)
    den = denoisers.from_keras_model(toy_networks.sinusoidal_eps_model(SHAPE[1:], seed=0), sched)
    x_T, _ = noise_lib.draw(2, K, SHAPE)
    families = ("ddim", "dpm_solver_pp_2m", "unipc")
    together = [samplers.create(f, den, num_steps=K, remat=False)(x_T) for f in families]
    assert frozen.network_function(den).experimental_get_tracing_count() == 1
    for family, shared in zip(families, together):
        alone = denoisers.from_keras_model(toy_networks.sinusoidal_eps_model(SHAPE[1:], seed=0),
                                           sched)
        np.testing.assert_array_equal(
            samplers.create(family, alone, num_steps=K, remat=False)(x_T), shared)
