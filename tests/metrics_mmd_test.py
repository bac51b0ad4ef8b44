"""The differentiable MMD / DDSS loss against float64 numpy references, and its gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import metrics
from ddss_tf.nets import classifier as classifier_lib

KERNELS = ("linear", "cubic")


def np_gram(x, y, kernel):
    """Full kernel matrix, written independently of the library."""
    dot = np.einsum("id,jd->ij", x, y)
    return dot if kernel == "linear" else (dot / x.shape[1] + 1.0) ** 3


def np_offdiag_mean(gram):
    mask = ~np.eye(len(gram), dtype=bool)
    return gram[mask].mean()


def np_mmd2(x, y, kernel):
    """Unbiased squared MMD from full n x n, m x m and n x m matrices."""
    return (np_offdiag_mean(np_gram(x, x, kernel)) + np_offdiag_mean(np_gram(y, y, kernel))
            - 2.0 * np_gram(x, y, kernel).mean())


def np_loss(x, y, kernel):
    """The DDSS loss: the unbiased MMD^2 without the real-real term."""
    return np_offdiag_mean(np_gram(x, x, kernel)) - 2.0 * np_gram(x, y, kernel).mean()


def random_features(seed, n=37, m=23, d=11):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(0.3, 1.5, size=(m, d))


@pytest.mark.parametrize("kernel", KERNELS)
def test_mmd2_and_loss_match_full_matrix_reference(kernel):
    x, y = random_features(0)
    np.testing.assert_allclose(metrics.mmd2(x, y, kernel).numpy(), np_mmd2(x, y, kernel), rtol=1e-12)
    np.testing.assert_allclose(metrics.kid_loss(x, y, kernel).numpy(), np_loss(x, y, kernel),
                               rtol=1e-12)
    # The dropped term is the real-real one, so mmd2 - kid_loss does not depend on x.
    x2, _ = random_features(1)
    gap = metrics.mmd2(x, y, kernel) - metrics.kid_loss(x, y, kernel)
    gap2 = metrics.mmd2(x2, y, kernel) - metrics.kid_loss(x2, y, kernel)
    np.testing.assert_allclose(gap.numpy(), gap2.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gap.numpy(), np_offdiag_mean(np_gram(y, y, kernel)), rtol=1e-12)


def test_linear_mmd_equals_mean_embedding_closed_form():
    """Linear kernel: MMD_u^2 = |mean_x - mean_y|^2 - tr(S_x)/n - tr(S_y)/m (S = unbiased covariance)."""
    x, y = random_features(2, n=50, m=40, d=7)
    closed = (np.sum((x.mean(0) - y.mean(0)) ** 2) - np.trace(np.cov(x, rowvar=False)) / len(x)
              - np.trace(np.cov(y, rowvar=False)) / len(y))
    np.testing.assert_allclose(metrics.mmd2(x, y, "linear").numpy(), closed, rtol=1e-11)


def test_linear_loss_only_needs_the_real_mean():
    x, y = random_features(3)
    full = metrics.kid_loss(x, y, "linear")
    from_mean = metrics.kid_loss(x, y.mean(axis=0, keepdims=True), "linear")
    np.testing.assert_allclose(from_mean.numpy(), full.numpy(), rtol=1e-12)


def test_loss_follows_generated_dtype_and_runs_in_tf_function():
    x, y = random_features(4)
    loss32 = tf.function(metrics.kid_loss)(tf.constant(x, tf.float32), y, "cubic")
    assert loss32.dtype == tf.float32
    np.testing.assert_allclose(loss32.numpy(), np_loss(x, y, "cubic"), rtol=1e-4)


def feature_map_64(seed=0, pixels=64, d=16):
    """A smooth float64 feature network images [B, 8, 8, 1] -> [B, d]."""
    w = tf.constant(np.random.default_rng(seed).normal(size=(pixels, d)) / 4.0)

    def phi(images):
        return tf.tanh(tf.matmul(tf.reshape(images, [tf.shape(images)[0], -1]), w))
    return phi


def check_gradient_against_finite_differences(loss_fn, x, rng, num_coords=12, h=1e-5, rtol=1e-6):
    """Tape gradient vs central differences along coordinates and one random direction.

    The absolute tolerance is the rounding error of a float64 central difference,
    about eps |L| / h, with a safety factor of 20.
    """
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn(x)
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    atol = 20 * np.finfo(np.float64).eps * max(1.0, abs(float(loss))) / h
    flat = x.numpy().ravel()
    directions = [np.eye(flat.size)[i] for i in rng.choice(flat.size, num_coords, replace=False)]
    directions.append(rng.normal(size=flat.size))
    for v in directions:
        plus = loss_fn(tf.constant((flat + h * v).reshape(x.shape))).numpy()
        minus = loss_fn(tf.constant((flat - h * v).reshape(x.shape))).numpy()
        numeric = (plus - minus) / (2 * h)
        analytic = grad.ravel() @ v
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol)


@pytest.mark.parametrize("kernel", KERNELS)
def test_loss_gradient_wrt_images_matches_finite_differences(kernel):
    rng = np.random.default_rng(5)
    phi = feature_map_64()
    real = phi(tf.constant(rng.uniform(-1, 1, size=(9, 8, 8, 1))))
    images = rng.uniform(-1, 1, size=(6, 8, 8, 1))
    check_gradient_against_finite_differences(
        lambda x: metrics.kid_loss(phi(x), real, kernel), images, rng)


@pytest.fixture
def float64_classifier():
    """An (untrained) digits classifier built in float64, so finite differences are exact enough."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        keras.utils.set_random_seed(0)
        model = classifier_lib.build_classifier()
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)
    return model


@pytest.mark.parametrize("kernel", KERNELS)
def test_loss_gradient_through_digits_classifier_features(float64_classifier, kernel):
    extractor = metrics.from_keras_classifier(float64_classifier)
    rng = np.random.default_rng(6)
    real = extractor(rng.uniform(-1, 1, size=(10, 8, 8, 1)))
    assert real.dtype == tf.float64 and real.shape == (10, 128)
    images = rng.uniform(-1, 1, size=(5, 8, 8, 1))
    check_gradient_against_finite_differences(
        lambda x: metrics.kid_loss(extractor(x), real, kernel), images, rng, num_coords=6)


def test_bad_inputs_raise_value_error():
    x, y = random_features(7)
    with pytest.raises(ValueError, match="feature widths differ"):
        metrics.kid_loss(x, y[:, :5])
    with pytest.raises(ValueError, match=r"shape \[N, d\]"):
        metrics.kid_loss(x[None], y)
    with pytest.raises(ValueError, match="unknown kernel 'rbf'; accepted: linear, cubic"):
        metrics.mmd2(x, y, "rbf")
