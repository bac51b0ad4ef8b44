"""The graph ops an exported sampler and `ddss_sample` share: clipping and uint8 images.

Both run the same code in a SavedModel signature and eagerly (with the noise of
`ddss_tf.noise`), so an export and the in-memory sampler give the same images for the
same seed.
"""

import tensorflow as tf

__all__ = ["to_uint8", "clip_to_range"]


def clip_to_range(images, data_range):
    """Clip float images to the data range (low, high)."""
    low, high = data_range
    return tf.clip_by_value(images, tf.cast(low, images.dtype), tf.cast(high, images.dtype))


def to_uint8(images, data_range):
    """float images in data_range -> uint8 [0, 255], as `images.to_uint8` (float64, half-even)."""
    low, high = (float(v) for v in data_range)
    x = (tf.cast(images, tf.float64) - low) / (high - low)
    return tf.cast(tf.clip_by_value(tf.round(x * 255.0), 0.0, 255.0), tf.uint8)
