"""TensorBoard scalars and images without importing TensorBoard.

tf.summary.scalar / tf.summary.image live in the tensorboard package, which
tensorflow-cpu does not install. The event files only need tf.summary.write
with the right plugin metadata, which core TensorFlow has, so training and
search write TensorBoard logs with no extra dependency; viewing them needs
`pip install tensorboard` (the `tensorboard` extra).
"""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

__all__ = ["scalar", "image"]


def _metadata(plugin, data_class):
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin, content=b""),
        data_class=data_class)


def scalar(name, value, step):
    """Write one scalar under the default summary writer (no-op without one)."""
    return tf.summary.write(name, tf.cast(value, tf.float32), step=step,
                            metadata=_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR))


def image(name, grid, step):
    """Write one uint8 image [H, W, C] (C = 1 or 3) as a TensorBoard image."""
    grid = np.asarray(grid, np.uint8)
    png = tf.io.encode_png(grid)
    tensor = tf.stack([tf.as_string(grid.shape[1]), tf.as_string(grid.shape[0]), png])
    return tf.summary.write(name, tensor, step=step,
                            metadata=_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE))
