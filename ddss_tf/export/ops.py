"""The graph ops an exported sampler and `ddss_sample` share: seeded noise and uint8 images.

Both run the same code in a SavedModel signature and eagerly, so an export and the
in-memory sampler give the same images for the same seed.
"""

import tensorflow as tf

__all__ = ["draw_noise", "seed_pair", "to_uint8", "clip_to_range"]


def seed_pair(seed):
    """An integer seed in [0, 2**63) as the int32 pair [hi, lo] that `draw_noise` takes.

    draw_noise(seed_pair(s), ...) draws what samplers.draw_noise(s, ...) draws.
    """
    seed = int(seed)
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed}")
    hi, lo = seed >> 32, seed & 0xFFFFFFFF
    return [hi, lo - 2 ** 32 if lo >= 2 ** 31 else lo]


def draw_noise(seed, num_samples, num_steps, image_shape, dtype=tf.float32):
    """x_T [N, H, W, C] and noise [K, N, H, W, C] from a seed pair, in or out of a graph.

    Args:
      seed: int32 [2] tensor (hi, lo), as TF Serving clients send it; it stands for the
        64-bit seed s = hi * 2**32 + (lo mod 2**32), and the draws are exactly
        `samplers.draw_noise(s, K, [N, H, W, C])`.
      num_samples: N, int scalar (tensor or Python).
      num_steps: K, Python int.
      image_shape: [H, W, C], Python ints.
    """
    seed = tf.convert_to_tensor(seed, tf.int32)
    hi = tf.cast(seed[0], tf.int64)
    lo = tf.cast(tf.bitcast(seed[1], tf.uint32), tf.int64)
    s = hi * (2 ** 32) + lo
    shape = tf.concat([tf.reshape(tf.cast(num_samples, tf.int32), [1]),
                       tf.constant(list(image_shape), tf.int32)], 0)
    zero, one = tf.constant(0, tf.int64), tf.constant(1, tf.int64)
    x_T = tf.random.stateless_normal(shape, tf.stack([s, zero]), dtype=dtype)
    noise = tf.random.stateless_normal(tf.concat([[int(num_steps)], shape], 0),
                                       tf.stack([s, one]), dtype=dtype)
    return x_T, noise


def clip_to_range(images, data_range):
    """Clip float images to the data range (low, high)."""
    low, high = data_range
    return tf.clip_by_value(images, tf.cast(low, images.dtype), tf.cast(high, images.dtype))


def to_uint8(images, data_range):
    """float images in data_range -> uint8 [0, 255], as `images.to_uint8` (float64, half-even)."""
    low, high = (float(v) for v in data_range)
    x = (tf.cast(images, tf.float64) - low) / (high - low)
    return tf.cast(tf.clip_by_value(tf.round(x * 255.0), 0.0, 255.0), tf.uint8)
