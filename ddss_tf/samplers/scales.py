"""Coefficients across guidance scales: the anchors and the interpolation between them.

A sampler built with guidance_scales=(w_1, ..., w_n) (samplers.base) keeps its variables
at each anchor w_j; at scale w it reads them as

    sum_j weights_j(w) * value_j,   weights = `interpolation_weights(anchors, w)`

the piecewise-linear interpolation between the two anchors around w (w clipped to
[w_1, w_n]): continuous in w, exact at each anchor.
"""

import tensorflow as tf

__all__ = ["check_anchors", "interpolation_weights"]


def check_anchors(scales):
    """None, or a tuple of >= 2 increasing finite floats >= 0; ValueError otherwise."""
    if scales is None:
        return None
    try:
        scales = tuple(float(w) for w in scales)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_scales must be a list of numbers, got {scales!r}") from None
    if len(scales) < 2 or not all(0 <= a < b < float("inf") for a, b in zip(scales, scales[1:])):
        raise ValueError(f"guidance_scales must hold 2 or more increasing scales >= 0 (the "
                         f"anchors of coefficients that depend on the scale), got {list(scales)}")
    return scales


def interpolation_weights(anchors, scale):
    """[n] float32 weights of the anchors at `scale` (a number or scalar tensor, clipped to the
    anchors' range): at most two non-zero, summing to 1, linear in the scale between
    neighbouring anchors."""
    n = len(anchors)
    anchors = tf.constant(anchors, tf.float32)
    w = tf.clip_by_value(tf.cast(scale, tf.float32), anchors[0], anchors[-1])
    i = tf.clip_by_value(tf.searchsorted(anchors, w[None], side="right")[0] - 1, 0, n - 2)
    frac = (w - anchors[i]) / (anchors[i + 1] - anchors[i])
    return (1 - frac) * tf.one_hot(i, n) + frac * tf.one_hot(i + 1, n)
