"""The Keras UNet: shapes, real-valued t, serialisation round trip, sizes."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from ddss_tf.nets import unet


def _randomise(model, seed=0):
    # Zero-initialised output convs make an untrained UNet output 0; randomise for real checks.
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32))


def test_digits_config_shapes_and_real_t():
    model = unet.build_unet(unet.DIGITS_CONFIG)
    _randomise(model)
    x = np.random.default_rng(1).standard_normal((3, 8, 8, 1)).astype(np.float32)
    y = model([x, np.array([0.0, 10.5, 999.0], np.float32)])
    assert y.shape == (3, 8, 8, 1)
    # The output moves continuously with real t: a tiny change of t changes it a little.
    t = np.full([3], 400.0, np.float32)
    y0, y1 = model([x, t]), model([x, t + 1e-3])
    y2 = model([x, t + 1.0])
    d_small = float(tf.reduce_max(tf.abs(y1 - y0)))
    d_big = float(tf.reduce_max(tf.abs(y2 - y0)))
    assert 0 < d_small < d_big


def test_cifar10_config_matches_ho_et_al_size():
    # Ho et al.'s CIFAR-10 model has 35.7M parameters.
    model = unet.build_unet(unet.CIFAR10_CONFIG)
    assert model.count_params() == pytest.approx(35.7e6, rel=0.01)
    assert model.output_shape == (None, 32, 32, 3)


def test_save_load_round_trip(tmp_path):
    cfg = dict(unet.DIGITS_CONFIG, ch=16, norm_groups=4, dropout=0.1)
    model = unet.build_unet(cfg)
    _randomise(model, 2)
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 1)).astype(np.float32)
    t = np.array([5.0, 500.5], np.float32)
    path = str(tmp_path / "unet.keras")
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again([x, t]).numpy(), model([x, t]).numpy(), atol=1e-6)
    # Weights-only round trip into a freshly built model (how bundled models are loaded).
    model.save_weights(str(tmp_path / "w.weights.h5"))
    fresh = unet.build_unet(cfg)
    fresh.load_weights(str(tmp_path / "w.weights.h5"))
    np.testing.assert_allclose(fresh([x, t]).numpy(), model([x, t]).numpy(), atol=1e-6)


def test_timestep_embedding_is_sinusoidal():
    emb = unet.TimestepEmbedding(8)(np.array([0.0, 3.5], np.float32)).numpy()
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 3)
    expected = np.concatenate([np.sin(np.outer([0, 3.5], freqs)), np.cos(np.outer([0, 3.5], freqs))], 1)
    np.testing.assert_allclose(emb, expected, atol=1e-6)


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        unet.build_unet(dict(unet.DIGITS_CONFIG, image_shape=(6, 6, 1), ch_mult=(1, 2, 2)))


def test_upsampling_is_nearest_neighbour_repetition():
    x = np.random.default_rng(0).standard_normal([2, 3, 5, 4]).astype(np.float32)
    got = unet.Upsample2x()(x)
    np.testing.assert_array_equal(np.asarray(got), np.repeat(np.repeat(x, 2, axis=1), 2, axis=2))


def test_class_conditional_unet_adds_a_label_embedding_to_the_time_embedding(tmp_path):
    cfg = dict(unet.DIGITS_CONFIG, ch=16, norm_groups=4)
    cond = unet.build_unet(dict(cfg, num_classes=10))
    plain = unet.build_unet(cfg)
    assert [i.name for i in cond.inputs] == ["x_t", "t", "c"] and len(plain.inputs) == 2
    _randomise(cond, 4)
    table = cond.get_layer("class_emb").embeddings
    assert table.shape == (11, 4 * 16)  # 10 labels and the null label 10
    for v in plain.weights:  # every weight but the label table is shared
        v.assign(next(w for w in cond.weights if w.path == v.path))
    x = np.random.default_rng(5).standard_normal((3, 8, 8, 1)).astype(np.float32)
    t = np.array([3.0, 300.0, 900.0], np.float32)
    labels = np.array([0, 7, 10], np.int32)
    out = cond([x, t, labels]).numpy()
    assert np.abs(out[0] - cond([x, t, np.array([1, 7, 10], np.int32)]).numpy()[0]).max() > 1e-4
    # With a zero row for a label, the conditional network is the unconditional one.
    table.assign(np.where(np.arange(11)[:, None] == 7, 0.0, table.numpy()))
    np.testing.assert_allclose(cond([x, t, labels]).numpy()[1], plain([x, t]).numpy()[1],
                               atol=1e-6)
    path = str(tmp_path / "cond.keras")
    cond.save(path)
    np.testing.assert_allclose(keras.models.load_model(path)([x, t, labels]).numpy(),
                               cond([x, t, labels]).numpy(), atol=1e-6)
