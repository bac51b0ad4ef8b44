"""Metrics of class-conditional samples: each class against the real data of that class.

Evaluation (float64 numpy):
    per_class_fid(gen_feats, gen_labels, real_feats, real_labels) -> (mean, {class: FID})
    per_class_kid(gen_feats, gen_labels, real_feats, real_labels) -> (mean, {class: KID})
    accuracy(logits, labels) -> fraction of samples a classifier assigns their requested label

Loss (differentiable TensorFlow):
    per_class_kid_loss(gen_feats, gen_labels, real_feats, real_labels, num_classes)
        the mean over the classes of the batch of `mmd.kid_loss` between that class's
        generated and real features, so a sampler cannot trade one class's quality for
        another's (the class-conditional KID of a guided search)
    class_loss_reference(real_feats, real_labels, kernel)
        what that loss reads of the reference set, computed once (`mmd.loss_reference`'s twin)

A class is scored where both sets hold at least 2 of its samples (an unbiased MMD and a
covariance need two); the evaluation functions refuse a requested class with fewer.
"""

import numpy as np
import tensorflow as tf

from ddss_tf.metrics import _checks, mmd, scores

__all__ = ["per_class_fid", "per_class_kid", "accuracy", "per_class_kid_loss",
           "class_loss_reference"]


def _split(gen_feats, gen_labels, real_feats, real_labels):
    """{class: (gen features, real features)} for every class among gen_labels."""
    gen, real = _checks.feature_pair(gen_feats, real_feats)
    gen_labels, real_labels = (np.asarray(v).reshape(-1) for v in (gen_labels, real_labels))
    if len(gen_labels) != len(gen) or len(real_labels) != len(real):
        raise ValueError(f"one label per sample: {len(gen)} generated samples with "
                         f"{len(gen_labels)} labels, {len(real)} real with {len(real_labels)}")
    out = {}
    for c in np.unique(gen_labels):
        g, r = gen[gen_labels == c], real[real_labels == c]
        if len(g) < 2 or len(r) < 2:
            raise ValueError(f"class {c} has {len(g)} generated and {len(r)} real samples; every "
                             "requested class needs at least 2 of each")
        out[int(c)] = (g, r)
    return out


def per_class_fid(gen_feats, gen_labels, real_feats, real_labels):
    """(mean over the generated classes, {class: FID}) of each class's samples against the
    real samples of that class (`scores.fid`)."""
    per = {c: float(scores.fid(g, r))
           for c, (g, r) in _split(gen_feats, gen_labels, real_feats, real_labels).items()}
    return float(np.mean(list(per.values()))), per


def per_class_kid(gen_feats, gen_labels, real_feats, real_labels, kernel="cubic",
                  block_size=1024):
    """(mean over the generated classes, {class: KID}) as `per_class_fid`, with `scores.kid`."""
    per = {c: float(scores.kid(g, r, kernel, block_size)[0])
           for c, (g, r) in _split(gen_feats, gen_labels, real_feats, real_labels).items()}
    return float(np.mean(list(per.values()))), per


def accuracy(logits, labels):
    """Fraction of samples whose logits [N, C] put the requested label first."""
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"logits must be [N, C] with one label per row, got {logits.shape} "
                         f"and {labels.shape[0]} labels")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def per_class_kid_loss(gen_feats, gen_labels, real_feats, real_labels, num_classes,
                       kernel="linear"):
    """Mean over the classes with >= 2 generated samples in the batch of
    kid_loss(generated features of the class, real features of the class); a scalar tensor.

    Computed for all classes at once with one-hot masks (no per-class loop in the graph).
    real_feats / real_labels: the reference set and its labels. With the linear kernel only
    each class's real mean matters, so the [C, d] class means with labels 0..C-1 give the
    same loss from a much smaller constant.
    """
    if kernel not in mmd.kernel_names():
        raise ValueError(f"unknown kernel {kernel!r}; accepted: {', '.join(mmd.kernel_names())}")
    x = tf.convert_to_tensor(gen_feats)
    y = tf.cast(tf.convert_to_tensor(real_feats), x.dtype)
    gm = tf.one_hot(tf.cast(gen_labels, tf.int32), num_classes, dtype=x.dtype)   # [n, C]
    rm = tf.one_hot(tf.cast(real_labels, tf.int32), num_classes, dtype=x.dtype)  # [m, C]
    n, m = tf.reduce_sum(gm, 0), tf.reduce_sum(rm, 0)                          # [C]
    if kernel == "linear":
        sums = tf.matmul(gm, x, transpose_a=True)                                # [C, d]
        diag = tf.matmul(gm, tf.reduce_sum(tf.square(x), 1, keepdims=True), transpose_a=True)[:, 0]
        within = tf.reduce_sum(tf.square(sums), 1) - diag
        real_means = tf.matmul(rm, y, transpose_a=True) / tf.maximum(m, 1.0)[:, None]
        cross = tf.reduce_sum(sums * real_means, 1) / tf.maximum(n, 1.0)
    else:
        gram = mmd.kernel_matrix(x, x, kernel)
        within = (tf.einsum("ic,ij,jc->c", gm, gram, gm)
                  - tf.matmul(gm, tf.linalg.diag_part(gram)[:, None], transpose_a=True)[:, 0])
        cross = tf.einsum("ic,ij,jc->c", gm, mmd.kernel_matrix(x, y, kernel), rm) / tf.maximum(
            n * m, 1.0)
    within = within / tf.maximum(n * (n - 1.0), 1.0)
    scored = tf.cast((n >= 2) & (m >= 1), x.dtype)
    return tf.reduce_sum(scored * (within - 2.0 * cross)) / tf.maximum(tf.reduce_sum(scored), 1.0)


def class_loss_reference(real_feats, real_labels, kernel):
    """(features, labels) float32 / int32 tensors: what `per_class_kid_loss` reads of a
    reference set. With the linear kernel each present class's real mean and its label (all
    the loss reads of them); else every real feature with its label."""
    real_feats = np.asarray(real_feats, np.float32)
    real_labels = np.asarray(real_labels).reshape(-1).astype(np.int32)
    if kernel == "linear":
        present = np.unique(real_labels)
        means = np.stack([real_feats[real_labels == c].mean(0) for c in present])
        real_feats, real_labels = means, present.astype(np.int32)
    return tf.constant(real_feats), tf.constant(real_labels)
