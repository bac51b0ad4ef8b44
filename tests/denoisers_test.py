"""Denoiser conversions: eps-, x- and v-models all give the same (x0_hat, eps_hat)."""

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import denoisers, schedules


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    sched = schedules.linear_beta()
    x0 = rng.uniform(-1, 1, (4, 8, 8, 1))
    eps = rng.standard_normal((4, 8, 8, 1))
    t = np.array([0.0, 10.5, 400.0, 999.0])
    a = sched.alpha(t)[:, None, None, None]
    s = sched.sigma(t)[:, None, None, None]
    x_t = a * x0 + s * eps
    return sched, x0, eps, t, x_t, a, s


@pytest.mark.parametrize("prediction", ["eps", "x", "v"])
def test_each_parametrisation_recovers_x0_and_eps(prediction):
    sched, x0, eps, t, x_t, a, s = _setup()
    target = {"eps": eps, "x": x0, "v": a * eps - s * x0}[prediction]
    fn = lambda x, tt: tf.constant(target)  # an oracle network
    den = denoisers.from_fn(fn, sched, prediction=prediction)
    x0_hat, eps_hat = den(tf.constant(x_t), tf.constant(t))
    np.testing.assert_allclose(x0_hat.numpy(), x0, atol=1e-6)
    np.testing.assert_allclose(eps_hat.numpy(), eps, atol=1e-6)


def test_clipping_keeps_the_pair_consistent_with_x_t():
    sched, x0, eps, t, x_t, a, s = _setup(1)
    big = 3.0 * x0
    den = denoisers.from_fn(lambda x, tt: tf.constant(big), sched, prediction="x", clip_x0=True)
    x0_hat, eps_hat = den(tf.constant(x_t), tf.constant(t))
    np.testing.assert_allclose(x0_hat.numpy(), np.clip(big, -1, 1), atol=1e-12)
    np.testing.assert_allclose(a * x0_hat.numpy() + s * eps_hat.numpy(), x_t, atol=1e-9)


def test_from_keras_model_freezes_and_feeds_real_t():
    import keras
    x_in, t_in = keras.Input((2, 2, 1)), keras.Input(())
    out = keras.layers.Lambda(lambda z: z[0] * 0 + z[1][:, None, None, None])([x_in, t_in])
    model = keras.Model([x_in, t_in], out)
    den = denoisers.from_keras_model(model, schedules.linear_beta())
    assert model.trainable is False
    x0, eps = den(tf.zeros([2, 2, 2, 1]), tf.constant([3.25, 7.5]))
    np.testing.assert_allclose(eps.numpy()[:, 0, 0, 0], [3.25, 7.5])
    # A scalar t is broadcast over the batch.
    _, eps = den(tf.zeros([2, 2, 2, 1]), 5.5)
    np.testing.assert_allclose(eps.numpy()[:, 0, 0, 0], [5.5, 5.5])


def test_bad_input():
    sched = schedules.linear_beta()
    with pytest.raises(ValueError, match="accepted: eps, x, v"):
        denoisers.from_fn(lambda x, t: x, sched, prediction="score")
    with pytest.raises(ValueError, match="callable"):
        denoisers.from_eps_fn(3, sched)
    with pytest.raises(ValueError, match="Keras model"):
        denoisers.from_keras_model(lambda x: x, sched)
