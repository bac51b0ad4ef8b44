"""Conditional models brought from outside: a Keras file and a SavedModel taking labels or an
embedding as a third input load as conditional denoisers with their original outputs; the
references are the original objects, and unconditional models load as before (models_test)."""

import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import denoisers, evaluation, models

import toy_networks

_SHAPE = (8, 8, 1)


def _keras_labels_model(null_layer_name="class_emb"):
    """[x_t, t, c int [B]] -> eps: built-in layers only (a .keras file reloads them)."""
    return toy_networks.conditional_eps_model(_SHAPE, label_layer=null_layer_name)


class _ModuleCond(tf.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.RandomState(2)
        self.w = tf.Variable(rng.normal(0, 0.3, [3, 3, 1, 1]).astype(np.float32))
        self.table = tf.Variable(rng.normal(0, 1, [11]).astype(np.float32))
        self.proj = tf.Variable(rng.normal(0, 1, [4]).astype(np.float32))

    def labels(self, x_t, t, c):
        h = tf.nn.conv2d(x_t, self.w, 1, "SAME")
        return h * tf.gather(self.table, c)[:, None, None, None] + t[:, None, None, None] / 1e3

    def embedding(self, x_t, t, e):
        return x_t * tf.reduce_sum(e * self.proj, 1)[:, None, None, None] + t[:, None, None, None]


def _save(module, path, fn, signature):
    module.serve = tf.function(fn, input_signature=signature)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def _inputs():
    rng = np.random.RandomState(0)
    return (rng.normal(size=(3, *_SHAPE)).astype(np.float32),
            np.array([0.0, 17.5, 999.0], np.float32), np.array([0, 4, 10], np.int32))


def test_a_conditional_keras_file_loads_as_a_conditional_denoiser(tmp_path):
    net = _keras_labels_model()
    path = str(tmp_path / "cond.keras")
    net.save(path)
    x, t, c = _inputs()
    loaded, _ = models.load(path, schedule="linear_beta")
    np.testing.assert_allclose(loaded([x, t, c]).numpy(), net([x, t, c]).numpy(), atol=1e-6)
    den, _ = models.load_denoiser(path, schedule="linear_beta")
    assert isinstance(den, denoisers.ConditionalDenoiser) and int(den.null_condition) == 10
    assert models.describe(den) == ("conditional on labels 0..9: model([x_t, t, c]), null label "
                                    "10 (classifier-free guidance's unconditional call)")
    # Without a guidance scale an evaluation refuses it in one line.
    cfg = types.SimpleNamespace(**dict(models.DEFAULTS, model=path, schedule="linear_beta"))
    with pytest.raises(ValueError, match="is conditional on labels 0..9.*give a classifier-free "
                                         r"guidance scale \(ddss_search / ddss_benchmark"):
        evaluation.Evaluator(cfg)
    # Without a class_emb layer the null label cannot be read: one line says what to give.
    other = str(tmp_path / "other.keras")
    _keras_labels_model("label_table").save(other)
    with pytest.raises(ValueError, match="no layer 'class_emb' to read its null label from; "
                                         "give null_condition"):
        models.load_denoiser(other, schedule="linear_beta")


def test_conditional_saved_models_on_labels_and_on_embeddings(tmp_path):
    module = _ModuleCond()
    image, times = tf.TensorSpec([None, *_SHAPE]), tf.TensorSpec([None])
    by_labels = _save(module, str(tmp_path / "labels"),
                      lambda x_t, t, label: {"eps": module.labels(x_t, t, label)},
                      [image, times, tf.TensorSpec([None], tf.int32)])
    x, t, c = (tf.constant(v) for v in _inputs())
    net, _ = models.load(by_labels, schedule="linear_beta")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        got, want = net([x, t, c]), module.labels(x, t, c)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(got, x).numpy(), tape.gradient(want, x).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert not net.trainable_variables

    by_embedding = _save(module, str(tmp_path / "embedding"),
                         lambda x_t, t, e: {"eps": module.embedding(x_t, t, e)},
                         [image, times, tf.TensorSpec([None, 4])])
    den, _ = models.load_denoiser(by_embedding, schedule="linear_beta")
    assert models.describe(den).startswith("conditional on embeddings [B, 4]")
    e = np.random.RandomState(3).normal(size=(3, 4)).astype(np.float32)
    # The null embedding is zeros: w = 1 doubles the conditional term, keeps t's.
    _, eps = den.guided(e, 1.0)(x, t)
    cond, uncond = module.embedding(x, t, e), module.embedding(x, t, np.zeros_like(e))
    np.testing.assert_allclose(eps.numpy(), (2 * cond - uncond).numpy(), rtol=1e-5, atol=1e-5)


def test_a_condition_of_another_kind_is_refused_in_one_line(tmp_path):
    module = _ModuleCond()
    path = _save(module, str(tmp_path / "int_embedding"),
                 lambda x_t, t, e: {"eps": x_t}, [tf.TensorSpec([None, *_SHAPE]),
                                                  tf.TensorSpec([None]),
                                                  tf.TensorSpec([None, 4], tf.int32)])
    with pytest.raises(ValueError, match=r"serving_default takes e int32 \[None, 4\], t float32"):
        models.load(path, schedule="linear_beta")
    x, t = keras.Input(_SHAPE), keras.Input(())
    c = keras.Input((2, 2))
    bad = keras.Model([x, t, c], keras.layers.Conv2D(1, 3, padding="same")(x))
    bad.save(tmp_path / "bad.keras")
    with pytest.raises(ValueError, match=r"takes inputs \[\(None, 8, 8, 1\), \(None,\), "
                                         r"\(None, 2, 2\)\]; the contract is"):
        models.load(str(tmp_path / "bad.keras"), schedule="linear_beta")


def test_the_unconditional_bundled_model_says_so():
    den, _ = models.load_denoiser("digits")
    assert isinstance(den, denoisers.Denoiser)
    assert models.describe(den) == "unconditional: model([x_t, t])"
