"""The looped chain (loop=True, one tf.while_loop): the same samples and gradients as the
unrolled chain, in graph mode and under XLA, memory still flat in K with remat, and the network
present once in the compiled program whatever K (the unrolled chain holds K copies)."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import denoisers, samplers, schedules
from ddss_tf import noise as noise_lib
from ddss_tf.metrics import features
from ddss_tf.nets import unet
from ddss_tf.search import SearchConfig, trainer as trainer_lib
from ddss_tf.search.objectives import kid

import toy_networks

SHAPE = [3, 8, 8, 1]


@pytest.fixture(scope="module")
def den():
    return denoisers.from_keras_model(toy_networks.sinusoidal_eps_model(SHAPE[1:], seed=5),
                                      schedules.linear_beta(1000))


def _loss_and_grads(layer, x_T, noise):
    with tf.GradientTape() as tape:
        out = layer(x_T, noise)
        loss = tf.reduce_sum(tf.square(out - 0.3))
    grads = tape.gradient(loss, layer.trainable_variables)
    return out, [tf.zeros_like(v) if g is None else g
                 for g, v in zip(grads, layer.trainable_variables)]


_FAMILIES = [("ggdm", dict(pred=True, time=True, init="ddim")),
             ("ggdm", dict(pred=False, time=True, init="ddpm")),
             ("ddim_sigma", dict(time=True)), ("vars", dict(time=True)),
             ("rddim", dict(time=True, init="ddim")), ("ddpm", dict(time=True)),
             ("ddim", dict(eta=0.5))]


@pytest.mark.parametrize("family,options", _FAMILIES)
@pytest.mark.parametrize("k", [1, 2, 5])
def test_the_looped_chain_has_the_unrolled_samples_and_gradients(den, family, options, k):
    x_T, noise = noise_lib.draw(7, k, SHAPE)
    results = {}
    for loop in (False, True):
        layer = samplers.create(family, den, num_steps=k, loop=loop, **options)
        if layer.trainable_variables:  # move off the init: every coefficient matters
            rng = np.random.default_rng(1)
            for v in layer.trainable_variables:
                v.assign_add(0.05 * rng.standard_normal(v.shape).astype(np.float32))
        results[loop] = tf.function(lambda x, z, layer=layer: _loss_and_grads(layer, x, z))(
            x_T, noise)
    (out_u, grads_u), (out_l, grads_l) = results[False], results[True]
    np.testing.assert_allclose(out_l.numpy(), out_u.numpy(), rtol=0,
                               atol=1e-6 * float(tf.reduce_max(tf.abs(out_u))))
    for g_l, g_u in zip(grads_l, grads_u):
        scale = max(float(tf.reduce_max(tf.abs(g_u))), 1e-6)
        np.testing.assert_allclose(g_l.numpy(), g_u.numpy(), rtol=0, atol=1e-5 * scale)


def test_the_looped_chain_under_xla_matches_the_unrolled_one(den):
    k = 4
    x_T, noise = noise_lib.draw(8, k, SHAPE)
    results = {}
    for loop in (False, True):
        layer = samplers.create("ggdm", den, num_steps=k, pred=True, time=True, loop=loop)
        results[loop] = tf.function(lambda x, z, layer=layer: _loss_and_grads(layer, x, z),
                                    jit_compile=True)(x_T, noise)
    np.testing.assert_allclose(results[True][0].numpy(), results[False][0].numpy(), atol=1e-5)
    for g_l, g_u in zip(results[True][1], results[False][1]):
        scale = float(tf.reduce_max(tf.abs(g_u)))
        np.testing.assert_allclose(g_l.numpy(), g_u.numpy(), rtol=0, atol=1e-4 * scale)


def _convolutions_in_hlo(den, k, loop):
    layer = samplers.create("ggdm", den, num_steps=k, pred=True, time=True, loop=loop)
    x_T, noise = noise_lib.draw(0, k, SHAPE)
    fn = tf.function(lambda x, z: _loss_and_grads(layer, x, z), jit_compile=True)
    hlo = fn.experimental_get_compiler_ir(x_T, noise)(stage="hlo")
    return len(re.findall(r"= f32\[[^\]]*\][^ ]* convolution\(", hlo))


def test_the_compiled_program_holds_the_network_once_whatever_k(den):
    looped = [_convolutions_in_hlo(den, k, loop=True) for k in (2, 6)]
    unrolled = [_convolutions_in_hlo(den, k, loop=False) for k in (2, 6)]
    assert looped[0] == looped[1] > 0, looped    # the loop body, and the final step's call
    assert unrolled[1] > 2 * unrolled[0], unrolled  # one copy per step


@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_looped_chain_keeps_remat_memory_flat(jit_compile):
    """(Allocator peak; tools/bench_scale.py measures it at the paper's shapes.)"""
    den = denoisers.from_keras_model(toy_networks.conv_eps_model(), schedules.linear_beta(1000))
    peaks = {}
    for k, remat in ((8, True), (16, True), (16, False)):
        x_T, noise = noise_lib.draw(0, k, [8, 16, 16, 1])
        layer = samplers.create("ggdm", den, num_steps=k, pred=True, remat=remat, loop=True)
        fn = tf.function(lambda x, z, layer=layer: _loss_and_grads(layer, x, z)[1],
                         jit_compile=jit_compile)
        fn(x_T, noise)
        start = tf.config.experimental.get_memory_info("CPU:0")["current"]
        tf.config.experimental.reset_memory_stats("CPU:0")
        fn(x_T, noise)
        peaks[k, remat] = tf.config.experimental.get_memory_info("CPU:0")["peak"] - start
    assert peaks[16, True] < peaks[16, False] / 3, peaks
    assert peaks[16, True] < 1.5 * peaks[8, True], peaks  # not growing with K like activations


@pytest.mark.parametrize("family", samplers.solver_names())
def test_the_multistep_solvers_refuse_the_loop(den, family):
    with pytest.raises(ValueError, match=f"loop=True does not apply to the {family} family"):
        samplers.create(family, den, num_steps=3, loop=True)


def test_a_looped_search_step_compiles_the_network_and_equals_the_unrolled_step(den):
    # On one device a looped chain runs its loop as graph ops around the XLA-compiled network
    # (search.trainer); the unrolled chain is compiled whole. Same step, same update.
    ext = features.from_function(lambda x: tf.reshape(x, [tf.shape(x)[0], -1]), "pixels")
    real = np.random.default_rng(2).standard_normal([32, 64]).astype(np.float32)
    updated = {}
    for loop in (False, True):
        cfg = SearchConfig(num_steps=4, batch_size=8, loop=loop, xla=True, train_steps=5,
                           init="ddim")
        layer = cfg.build_sampler(den)
        trainer = trainer_lib.Trainer(layer, ext, kid.KIDLoss(real, cfg.kernel),
                                      tf.distribute.get_strategy(), cfg, SHAPE[1:])
        assert trainer.compiles_network_alone == loop
        loss, _ = trainer.train_step()
        updated[loop] = (loss, [v.numpy() for v in layer.trainable_variables])
    assert updated[True][0] == pytest.approx(updated[False][0], rel=1e-5)
    for a, b in zip(updated[True][1], updated[False][1]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("remat", [False, True])
def test_the_looped_unet_chain_compiles_under_xla_with_and_without_remat(remat):
    """The UNet's upsampling differentiates inside an XLA while loop without remat too (Keras'
    UpSampling2D did not: its tile multiples were a forward-pass value)."""
    keras.utils.set_random_seed(3)
    net = unet.build_unet(dict(unet.DIGITS_CONFIG, ch=8, num_res_blocks=1, attn_resolutions=(),
                               norm_groups=4), name="tiny")
    rng = np.random.default_rng(2)
    for v in net.weights:  # the output convolution starts at zero: make every layer matter
        v.assign(0.2 * rng.standard_normal(v.shape).astype(np.float32))
    den = denoisers.from_keras_model(net, schedules.linear_beta(1000))
    k = 3
    x_T, noise = noise_lib.draw(4, k, SHAPE)
    results = {}
    for loop in (False, True):
        layer = samplers.create("ggdm", den, num_steps=k, pred=True, time=True, loop=loop,
                                remat=remat)
        results[loop] = tf.function(lambda x, z, layer=layer: _loss_and_grads(layer, x, z),
                                    jit_compile=True)(x_T, noise)
    np.testing.assert_allclose(results[True][0].numpy(), results[False][0].numpy(), atol=1e-5)
    for g_l, g_u in zip(results[True][1], results[False][1]):
        scale = max(float(tf.reduce_max(tf.abs(g_u))), 1e-6)
        np.testing.assert_allclose(g_l.numpy(), g_u.numpy(), rtol=0, atol=1e-4 * scale)
