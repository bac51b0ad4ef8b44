"""Constraint maps: unconstrained trainable variables -> valid sampler coefficients.

Every learnable degree of freedom of a sampler is a plain float32 variable passed
through one of the maps below, so the coefficients are valid *by construction*
(no clipping in the forward pass, docs/design.md; Watson et al. 2022, section 3:
"a simple transformation of trainable variables"). Each map has an inverse, used
only at construction time (float64 numpy) to initialise a layer from a baseline.

  unit_interval      p = sigmoid(v)                      in (0, 1)
  positive           y = softplus(v)                     in (0, inf)
  above_one          y = 1 + softplus(v)                 in (1, inf)
  increasing         f = cumsum(softmax([v; 1]))[:K]     0 < f_1 < ... < f_K < 1
                     (the VARS map of the paper; the appended logit 1 removes the
                     softmax's shift redundancy, so K logits give K values)

Baselines can sit on the boundary of these open sets (DDIM's zero noise, GGDM's
zero non-Markov weights, a stride's first query at t = 0). The inverses map such
targets to `BOUNDARY` = 1e-9 away from the edge. This is a trade-off: the value a
boundary entry contributes must stay below float32 rounding even after it is summed
over every state of a K = 25 GGDM chain (at 1e-7 an initialised GGDM drifts from its
baseline by ~5e-5; at 1e-9 by ~1e-6, the rounding level), while the gradient there
(about BOUNDARY times the upstream gradient) is not exactly zero. Entries started on
the boundary therefore move slowly under Adam; the paper initialises from DDPM, whose
noise levels are interior.
"""

import numpy as np
import tensorflow as tf

__all__ = [
    "BOUNDARY",
    "unit_interval",
    "unit_interval_inverse",
    "positive",
    "positive_inverse",
    "above_one",
    "above_one_inverse",
    "increasing",
    "increasing_inverse",
]

BOUNDARY = 1e-9
_LAST_LOGIT = 1.0


def unit_interval(v):
    """p = sigmoid(v), and 1 - p = sigmoid(-v) (returned too: no cancellation near 1)."""
    return tf.sigmoid(v), tf.sigmoid(-v)


def unit_interval_inverse(p):
    """logit(p) for p in [0, 1], with p kept BOUNDARY away from 0 and 1. float64 numpy."""
    p = np.clip(np.asarray(p, np.float64), BOUNDARY, 1.0 - BOUNDARY)
    return np.log(p) - np.log1p(-p)


def positive(v):
    """y = softplus(v) > 0."""
    return tf.math.softplus(v)


def positive_inverse(y):
    """softplus^-1(y) = y + log(-expm1(-y)) for y >= 0 (kept >= BOUNDARY). float64 numpy."""
    y = np.maximum(np.asarray(y, np.float64), BOUNDARY)
    return y + np.log(-np.expm1(-y))


def above_one(v):
    """y = 1 + softplus(v) > 1."""
    return 1.0 + tf.math.softplus(v)


def above_one_inverse(y):
    """Inverse of `above_one` for y >= 1 (y - 1 kept >= BOUNDARY). float64 numpy."""
    return positive_inverse(np.asarray(y, np.float64) - 1.0)


def increasing(v):
    """Increasing fractions from K logits: f = cumsum(softmax([v; 1]))[:K].

    Args:
      v: float tensor [K].
    Returns:
      (f, 1 - f, gaps): f [K] with 0 < f_1 < ... < f_K < 1; its complement [K],
      computed as a reverse cumulative sum (accurate when f is close to 1); and the
      K + 1 softmax gaps (f_1, f_2 - f_1, ..., 1 - f_K), all positive.
    """
    v = tf.convert_to_tensor(v)
    logits = tf.concat([v, tf.constant([_LAST_LOGIT], v.dtype)], 0)
    gaps = tf.nn.softmax(logits)
    f = tf.cumsum(gaps)[:-1]
    complement = tf.cumsum(gaps, reverse=True)[1:]
    return f, complement, gaps


def increasing_inverse(f):
    """Logits v [K] with increasing(v)[0] == f, for 0 <= f_1 <= ... <= f_K <= 1.

    Gaps smaller than BOUNDARY (repeated values, f_1 = 0, f_K = 1) are raised to
    BOUNDARY. float64 numpy.
    """
    f = np.asarray(f, np.float64)
    if f.ndim != 1 or np.any(np.diff(f) < 0) or np.any(f < 0) or np.any(f > 1):
        raise ValueError(f"expected a non-decreasing 1-D array in [0, 1], got {f}")
    gaps = np.maximum(np.diff(np.concatenate([[0.0], f, [1.0]])), BOUNDARY)
    logits = np.log(gaps)
    return logits[:-1] - logits[-1] + _LAST_LOGIT
