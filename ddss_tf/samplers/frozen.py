"""How a sampler calls its frozen network: weights fed as values, never watched (samplers.base)."""

import keras
import tensorflow as tf

__all__ = ["stateless_call", "in_xla_context"]


def stateless_call(fn, weights):
    """(x, t, values) -> fn(x, t) with the network's weights replaced by `values`."""
    weights = list(weights)

    def call(x, t, values):
        with keras.StatelessScope(state_mapping=list(zip(weights, values))):
            return fn(x, t)

    return call


def in_xla_context():
    """True while tracing inside a jit_compile=True function (or a TPU computation)."""
    from tensorflow.python.ops import control_flow_util  # no public equivalent

    graph = tf.compat.v1.get_default_graph()
    return tf.inside_function() and control_flow_util.GraphOrParentsInXlaContext(graph)
