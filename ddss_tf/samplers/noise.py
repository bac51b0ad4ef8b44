"""Stateless noise for samplers: one integer seed -> (x_T, noise), reproducibly.

Samplers are functions of their inputs (STYLE rule 3): all randomness comes in as
x_T [B, H, W, C] and a noise tensor [K, B, H, W, C] whose slice i is the z drawn
when leaving the i-th visited query time (slice 0 = the noisiest step).
"""

import tensorflow as tf

__all__ = ["draw_noise"]


def draw_noise(seed, num_steps, shape, dtype=tf.float32):
    """Draw x_T and the per-step noise of a num_steps sampler from an integer seed.

    Args:
      seed: Python int or int scalar tensor (e.g. a training step, or a step folded
        with the replica id); the same seed always gives the same draws.
      num_steps: K.
      shape: [B, H, W, C] of one sample batch.
    Returns:
      (x_T [B, H, W, C], noise [K, B, H, W, C]), standard normal, via
      tf.random.stateless_normal with seeds (seed, 0) and (seed, 1).
    """
    shape = [int(s) for s in shape]
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"shape must be [B, H, W, C] with positive entries, got {shape}")
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be an integer >= 1, got {num_steps!r}")
    seed = tf.cast(seed, tf.int64)
    if seed.shape.rank != 0:
        raise ValueError(f"seed must be an integer scalar, got shape {seed.shape}")
    x_T = tf.random.stateless_normal(shape, tf.stack([seed, tf.constant(0, tf.int64)]), dtype=dtype)
    noise = tf.random.stateless_normal([int(num_steps)] + shape,
                                       tf.stack([seed, tf.constant(1, tf.int64)]), dtype=dtype)
    return x_T, noise
