"""How a sampler calls its frozen network: weights fed as values, never watched (samplers.base)."""

import weakref

import keras
import tensorflow as tf

__all__ = ["stateless_call", "network_function", "in_xla_context"]

# denoiser -> {jit_compile: the network as one tf.function}; weak, so a denoiser's graphs go
# with it.
_FUNCTIONS = weakref.WeakKeyDictionary()


def stateless_call(fn, weights):
    """(x, t, values) -> fn(x, t) with the network's weights replaced by `values`."""
    weights = list(weights)

    def call(x, t, values):
        with keras.StatelessScope(state_mapping=list(zip(weights, values))):
            return fn(x, t)

    return call


def network_function(denoiser, jit=False):
    """The frozen network of `denoiser` as one tf.function (x, t, weight values) ->
    prediction, shared by every sampler on that denoiser (jit: XLA-compiled on its own).

    Shared, the network is traced once per input shape and dtype for all of them: the
    start's screen samples 36 samplers on one denoiser, and with a function per sampler
    each traced the network again (and TensorFlow logged its retracing warning)."""
    functions = _FUNCTIONS.setdefault(denoiser, {})
    if jit not in functions:
        call = stateless_call(denoiser.fn, denoiser.network.weights)
        functions[jit] = tf.function(call, autograph=False, jit_compile=jit or None)
    return functions[jit]


def in_xla_context():
    """True while tracing inside a jit_compile=True function (or a TPU computation)."""
    from tensorflow.python.ops import control_flow_util  # no public equivalent

    graph = tf.compat.v1.get_default_graph()
    return tf.inside_function() and control_flow_util.GraphOrParentsInXlaContext(graph)
