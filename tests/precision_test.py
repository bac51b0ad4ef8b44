"""bfloat16 networks (ddss_tf.precision): the copies' convolutions and dense layers compute in
bfloat16 with float32 weights, inputs and outputs; the time path, the output head, the
normalisations and the residual stream stay float32; graphs run as saved; and a search step in
bfloat16 leaves the layer's float32 network for evaluation and export."""

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import denoisers, models, precision, pretrained, samplers, schedules
from ddss_tf.nets import unet
from ddss_tf.search import SearchConfig, trainer as trainer_lib
from ddss_tf.search.objectives import kid


@pytest.fixture(scope="module")
def digits():
    net, sched = pretrained.digits_ddpm()
    return net, sched, denoisers.from_keras_model(net, sched)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal([4, 8, 8, 1]).astype(np.float32), \
        np.array([0.0, 17.5, 503.0, 999.0], np.float32)


def test_a_bfloat16_copy_runs_its_convolutions_in_bfloat16_with_the_same_weights(digits):
    net, _, _ = digits
    copy = precision.keras_network(net, "bfloat16")
    assert copy is not net and precision.keras_network(net, "float32") is net
    for a, b in zip(copy.weights, net.weights):
        assert a.dtype == b.dtype == "float32"
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    block = copy.get_layer("down0_res0")
    assert block.conv1.compute_dtype == block.temb_proj.compute_dtype == "bfloat16"
    assert copy.get_layer("down1_attn0").qkv.compute_dtype == "bfloat16"
    assert block.norm1.compute_dtype == block.compute_dtype == "float32"  # norms, residual stream
    for name in ("temb", "temb_dense0", "temb_dense1", "conv_out"):  # time path, output head
        assert copy.get_layer(name).compute_dtype == "float32", name
    assert net.get_layer("down0_res0").conv1.compute_dtype == "float32"  # the original is kept
    x, t = _inputs()
    full, half = net([x, t]).numpy(), copy([x, t])
    assert half.dtype == tf.float32
    err = np.abs(half.numpy() - full).max()
    assert 0 < err < 0.05 * np.abs(full).max(), err  # bfloat16 rounding, nothing worse


def test_the_time_embedding_keeps_float32(digits):
    # bfloat16 holds 8 significant bits: 999 and 1000 are one number there.
    assert float(tf.cast(tf.constant(999.0, tf.bfloat16), tf.float32)) == 1000.0
    copy = precision.keras_network(digits[0], "bfloat16")
    emb = copy.get_layer("temb")
    a, b = emb(np.array([999.0], np.float32)), emb(np.array([1000.0], np.float32))
    assert a.dtype == tf.float32 and np.abs(a.numpy() - b.numpy()).max() > 0.1


def test_a_bfloat16_denoiser_returns_float32(digits):
    _, sched, den = digits
    half = precision.denoiser(den, "bfloat16")
    assert half is not den and precision.denoiser(den, "float32") is den
    x, t = _inputs(1)
    (x0, eps), (_, eps_ref) = half(x, t), den(x, t)
    assert x0.dtype == eps.dtype == tf.float32
    np.testing.assert_allclose(eps.numpy(), eps_ref.numpy(), atol=0.05 * np.abs(eps_ref).max())
    with pytest.raises(ValueError, match="unknown precision 'float16'; accepted: float32, bfloat16"):
        precision.denoiser(den, "float16")


def test_graph_networks_run_as_saved(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x_t, t: {"eps": x_t * 0.5},
                           input_signature=[tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None])])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.f})
    den, _ = models.load_denoiser(str(tmp_path / "sm"), schedule="linear_beta")
    assert precision.denoiser(den, "bfloat16") is den


def test_a_bfloat16_feature_network_gives_float32_features():
    ext = pretrained.digits_features()
    half = precision.extractor(ext, "bfloat16")
    assert half is not ext and half.fingerprint == ext.fingerprint
    x, _ = _inputs(2)
    f16, f32 = half(np.tanh(x)), ext(np.tanh(x))
    assert f16.dtype == tf.float32
    np.testing.assert_allclose(f16.numpy(), f32.numpy(), atol=0.05 * np.abs(f32).max())


def test_a_bfloat16_search_step_keeps_the_layer_float32(digits):
    _, _, den = digits
    ext = pretrained.digits_features()
    real = np.random.default_rng(3).standard_normal([64, 128]).astype(np.float32)
    losses = {}
    for prec in ("float32", "bfloat16"):
        cfg = SearchConfig(num_steps=3, batch_size=8, xla=False, precision=prec, train_steps=10,
                           init="ddim")
        layer = cfg.build_sampler(den)
        trainer = trainer_lib.Trainer(layer, ext, kid.KIDLoss(real, cfg.kernel),
                                      tf.distribute.get_strategy(), cfg, [8, 8, 1])
        losses[prec] = trainer.train_step()[0]
        assert layer.denoiser is den  # evaluation and export see the float32 network
        assert int(trainer.step) == 1 and all(np.all(np.isfinite(v.numpy()))
                                              for v in layer.trainable_variables)
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.05)
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        SearchConfig(precision="half").validate()


def test_using_denoiser_needs_the_same_schedule(digits):
    _, _, den = digits
    layer = samplers.create("ddim", den, num_steps=2)
    other = denoisers.from_keras_model(unet.build_unet(unet.DIGITS_CONFIG),
                                       schedules.cosine(num_timesteps=1000))
    with pytest.raises(ValueError, match="on the layer's schedule"):
        with layer.using_denoiser(other):
            pass
