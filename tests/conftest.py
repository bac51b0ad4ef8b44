"""Test-session setup shared by every test module.

Split the physical CPU into 2 logical devices before TensorFlow initialises its
runtime, so MirroredStrategy tests can run two replicas on one host (DESIGN
section 7). Every other test sees "/cpu:0" as usual.
"""

import tensorflow as tf

_CPUS = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _CPUS[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # the runtime was initialised before this file was imported
    pass
