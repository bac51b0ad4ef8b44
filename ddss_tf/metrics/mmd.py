"""Differentiable unbiased squared MMD and the DDSS loss (TensorFlow ops).

For n generated features phi_i and m real features psi_j (rows of [n, d] and
[m, d] tensors) and a kernel k, the unbiased squared maximum mean discrepancy
(Gretton et al. 2012, Lemma 6; the Kernel Inception Distance of Binkowski et
al. 2018 with Inception features) is

    MMD_u^2 = 1/(n(n-1)) sum_{i != j} k(phi_i, phi_j)
            + 1/(m(m-1)) sum_{i != j} k(psi_i, psi_j)
            - 2/(n m)    sum_{i, j}   k(phi_i, psi_j).

The DDSS loss (Watson et al. 2022, Sec. 3.1; docs/design.md, "Objectives") drops the middle
term, which does not depend on the sampler:

    L = 1/(n(n-1)) sum_{i != j} k(phi_i, phi_j) - 2/(n m) sum_{i, j} k(phi_i, psi_j).

Kernels:
  "linear":  k(a, b) = a.b. Both remaining sums reduce to sums of features:
             sum_{i != j} phi_i.phi_j = |sum_i phi_i|^2 - sum_i |phi_i|^2 and
             1/(n m) sum_{i,j} phi_i.psi_j = mean(phi).mean(psi), so the cost is
             O((n + m) d) and the real set enters only through its mean.
  "cubic":   k(a, b) = (a.b / d + 1)^3 (Binkowski et al. 2018), O((n + m) n d).

Everything here is a pure function of tensors, differentiable, in the dtype of
the generated features. Values are not inspected (no NaN check), so the
functions run inside tf.function and distribution strategies; the numpy
evaluation metrics in `scores` do the value checks.
"""

import tensorflow as tf

__all__ = [
    "kernel_names",
    "kernel_matrix",
    "mmd2",
    "kid_loss",
    "cross_replica_kid_loss",
    "loss_reference",
    "reference_batch",
]

_KERNELS = ("linear", "cubic")


def kernel_names():
    """Every kernel name the MMD functions accept."""
    return _KERNELS


def _check_kernel(kernel):
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; accepted: {', '.join(_KERNELS)}")


def _as_feature_pair(x, y):
    """Tensors x [n, d], y [m, d] in x's float dtype; static shapes checked."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    y = tf.cast(tf.convert_to_tensor(y), x.dtype)
    for name, t in (("generated features", x), ("real features", y)):
        if t.shape.rank is not None and t.shape.rank != 2:
            raise ValueError(f"{name} must have shape [N, d], got {t.shape}")
    dx, dy = x.shape[-1], y.shape[-1]
    if dx is not None and dy is not None and dx != dy:
        raise ValueError(
            f"feature widths differ: generated features are {dx}-d, real features are {dy}-d")
    return x, y


def kernel_matrix(x, y, kernel):
    """K [n, m] with K_ij = k(x_i, y_j) for x [n, d], y [m, d]."""
    _check_kernel(kernel)
    dot = tf.matmul(x, y, transpose_b=True)
    if kernel == "linear":
        return dot
    dim = tf.cast(tf.shape(x)[-1], x.dtype)
    return (dot / dim + 1.0) ** 3


def _within(x, kernel):
    """1/(n(n-1)) sum_{i != j} k(x_i, x_j): the diagonal-free mean of the Gram matrix."""
    n = tf.cast(tf.shape(x)[0], x.dtype)
    if kernel == "linear":
        total = tf.reduce_sum(x, axis=0)
        off_diagonal = tf.reduce_sum(tf.square(total)) - tf.reduce_sum(tf.square(x))
    else:
        gram = kernel_matrix(x, x, kernel)
        off_diagonal = tf.reduce_sum(gram) - tf.linalg.trace(gram)
    return off_diagonal / (n * (n - 1.0))


def _cross(x, y, kernel):
    """1/(n m) sum_{i, j} k(x_i, y_j); for the linear kernel mean(x).mean(y)."""
    if kernel == "linear":
        return tf.reduce_sum(tf.reduce_mean(x, axis=0) * tf.reduce_mean(y, axis=0))
    return tf.reduce_mean(kernel_matrix(x, y, kernel))


def mmd2(gen_feats, real_feats, kernel="linear"):
    """Unbiased squared MMD between feature sets (module docstring), a scalar tensor.

    Args:
      gen_feats: [n, d] float tensor, n >= 2.
      real_feats: [m, d], m >= 2 (cast to gen_feats' dtype).
      kernel: "linear" or "cubic".
    """
    _check_kernel(kernel)
    x, y = _as_feature_pair(gen_feats, real_feats)
    return _within(x, kernel) + _within(y, kernel) - 2.0 * _cross(x, y, kernel)


def kid_loss(gen_feats, real_feats, kernel="linear"):
    """The DDSS loss: MMD_u^2 without the real-real term, a differentiable scalar tensor.

    L = 1/(n(n-1)) sum_{i != j} k(phi_i, phi_j) - 2/(n m) sum_{i,j} k(phi_i, psi_j)
    (Watson et al. 2022, Sec. 3.1). L + (real-real term) = mmd2(...), so the two
    have the same gradient with respect to gen_feats.

    Args:
      gen_feats: [n, d] features of generated samples, n >= 2.
      real_feats: [m, d] features of real data. With kernel="linear" only their
        mean is used, so the [1, d] mean of a large reference set may be passed
        instead (precompute it once).
      kernel: "linear" (the paper's best) or "cubic".
    """
    _check_kernel(kernel)
    x, y = _as_feature_pair(gen_feats, real_feats)
    return _within(x, kernel) - 2.0 * _cross(x, y, kernel)


def cross_replica_kid_loss(gen_feats, real_feats, kernel="linear", gather_real=False):
    """kid_loss of the global batch, computed on every replica of a tf.distribute strategy.

    Call inside `strategy.run`. The generated features of all replicas are
    all-gathered (replica order) so each replica returns the same value: the
    estimator L of `kid_loss` over the global batch of n = sum of local batches.
    With gather_real=True the real features are gathered too (use it when each
    replica holds its own real minibatch; leave it False when every replica holds
    the same reference features or mean).

    Gradients: the gradient of all_gather sums the upstream gradients of all
    replicas, so the caller must differentiate L / num_replicas_in_sync
    (docs/design.md, "Objectives"); the per-replica gradients then add up, in the optimizer's
    cross-replica sum, to the gradient of the single-device global-batch L:

        ctx = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            loss = cross_replica_kid_loss(features(sampler(x_T, noise)), real_mean)
            scaled = loss / ctx.num_replicas_in_sync
        grads = tape.gradient(scaled, sampler.trainable_variables)

    Outside any strategy (the default replica context) this equals kid_loss.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        raise ValueError(
            "cross_replica_kid_loss must be called in a replica context (inside strategy.run)")
    x, y = _as_feature_pair(gen_feats, real_feats)
    if ctx.num_replicas_in_sync > 1:
        x = ctx.all_gather(x, axis=0)
        if gather_real:
            y = ctx.all_gather(y, axis=0)
    return kid_loss(x, y, kernel)


def loss_reference(real_features, kernel):
    """What `kid_loss` reads of a reference set, computed once: a float32 tensor, the [1, d]
    mean of real_features [m, d] with the linear kernel (the cross term is mean(x).mean(y) and
    the real-real term is dropped), all of them [m, d] with the cubic kernel."""
    _check_kernel(kernel)
    real = tf.constant(real_features, tf.float32)
    return tf.reduce_mean(real, 0, keepdims=True) if kernel == "linear" else real


def reference_batch(reference, kernel, key, n):
    """The real features one loss evaluation compares n generated samples with: the mean of
    `loss_reference` (linear kernel), or n of its rows drawn with the stateless `key` (cubic:
    a minibatch estimator, as the paper's)."""
    if kernel == "linear":
        return reference
    idx = tf.random.stateless_uniform([n], key, 0, tf.shape(reference)[0], tf.int32)
    return tf.gather(reference, idx)
