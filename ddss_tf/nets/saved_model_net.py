"""A SavedModel diffusion network as a frozen Keras model, so it goes wherever a Keras one goes.

    net = saved_model_net.load("path/to/saved_model")   # keras.Model [x_t, t] -> prediction

The SavedModel needs a `serving_default` signature with two float inputs, one
[B, H, W, C] (x_t; H, W and C fixed) and one [B] (t, real-valued model time),
told apart by rank whatever their names, and one output shaped like x_t (eps, x0
or v), or [B, H, W, 2C] (eps and a learned variance; see `denoisers.from_keras_model`).
Anything else is one ValueError naming what the signature has.

The signature runs on the SavedModel's own variables (samplers, gradients to x_t,
XLA and `export.export_sampler` all call it as a function). Copies of those
variables are the Keras model's non-trainable weights, so `get_weights()` and the
weights fingerprint (`models.fingerprint`) see the network's values.
"""

import os
import re

import keras
import tensorflow as tf

__all__ = ["SavedModelNetwork", "load", "SIGNATURE"]

SIGNATURE = "serving_default"
_CONTRACT = ("(x_t float [B, H, W, C], t float [B]) -> one output [B, H, W, C] (or [B, H, W, 2C]: "
             "eps and a learned variance)")


class SavedModelNetwork(keras.layers.Layer):
    runs_own_variables = True

    """The `SIGNATURE` function of a loaded SavedModel as a frozen layer (x_t, t) -> prediction.

    Its graph reads the SavedModel's own variables (`runs_own_variables`), not the layer's
    weights: a call cannot be given other weight values, and the looped chain (whose
    gradient would capture those variables inside a tf.while_loop) stays unrolled.

    Args:
      loaded: the object `tf.saved_model.load` returned (kept alive with the layer).
      x_name, t_name: the signature's input names for x_t and t.
      output_key: the signature's output name.
      out_channels: the output's channels when they differ from x_t's (2C).
    """

    def __init__(self, loaded, x_name, t_name, output_key, out_channels=None, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self._out_channels = out_channels
        self._loaded = loaded
        self._fn = loaded.signatures[SIGNATURE]
        self._x_name, self._t_name, self._output_key = x_name, t_name, output_key
        specs = self._fn.structured_input_signature[1]
        self._x_dtype, self._t_dtype = specs[x_name].dtype, specs[t_name].dtype
        for i, v in enumerate(self._fn.variables):
            copy = self.add_weight(shape=tuple(v.shape), dtype=v.dtype.name, initializer="zeros",
                                   trainable=False, name=f"saved_model_variable_{i}")
            copy.assign(v.numpy())

    def call(self, x_t, t):
        out = self._fn(**{self._x_name: tf.cast(x_t, self._x_dtype),
                          self._t_name: tf.cast(t, self._t_dtype)})
        return tf.cast(out[self._output_key], tf.float32)

    def compute_output_spec(self, x_t, t):
        shape = tuple(x_t.shape[:-1]) + (self._out_channels or x_t.shape[-1],)
        return keras.KerasTensor(shape, dtype="float32")


def _fail(path, what):
    raise ValueError(f"the SavedModel {path} does not fit the model contract {_CONTRACT}: {what}")


def _shape(spec):
    return "?" if spec.shape.rank is None else str([d for d in spec.shape.as_list()])


def _inspect(path, fn):
    """(x_name, t_name, output_key, image_shape, output channels) of a signature, or ValueError."""
    inputs = fn.structured_input_signature[1]
    described = ", ".join(f"{k} {v.dtype.name} {_shape(v)}" for k, v in sorted(inputs.items()))
    by_rank = {v.shape.rank: k for k, v in inputs.items()}
    if len(inputs) != 2 or set(by_rank) != {4, 1}:
        _fail(path, f"{SIGNATURE} takes {described or 'no inputs'}")
    x_name, t_name = by_rank[4], by_rank[1]
    for name in (x_name, t_name):
        if not inputs[name].dtype.is_floating:
            _fail(path, f"input {name} is {inputs[name].dtype.name}, not float (t is real-valued: "
                  "learned query times fall between integer steps)")
    image_shape = inputs[x_name].shape.as_list()[1:]
    if None in image_shape:
        _fail(path, f"x_t ({x_name}) has shape {_shape(inputs[x_name])}; H, W and C must be fixed "
              "(export the signature with a static image shape)")
    outputs = fn.structured_outputs
    if not isinstance(outputs, dict) or len(outputs) != 1:
        names = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        _fail(path, f"{SIGNATURE} must return one output, returns {names}")
    (key, spec), = outputs.items()
    out_channels = image_shape[-1]
    if not spec.shape.is_compatible_with([None] + image_shape):
        out_channels *= 2
        if not spec.shape.is_compatible_with([None] + image_shape[:-1] + [out_channels]):
            _fail(path, f"output {key} has shape {_shape(spec)}, x_t has "
                  f"{_shape(inputs[x_name])}")
    return x_name, t_name, key, tuple(int(d) for d in image_shape), out_channels


def load(path, name=None):
    """keras.Model [x_t [B, H, W, C], t [B]] -> prediction over the SavedModel at `path`."""
    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # protobuf / TF raise many types for a foreign or damaged directory
        raise ValueError(f"cannot load the SavedModel {path} ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]})") from e
    signatures = getattr(loaded, "signatures", {})
    if SIGNATURE not in signatures:
        _fail(path, f"no {SIGNATURE} signature (it has: {', '.join(signatures) or 'none'})")
    x_name, t_name, key, image_shape, out_channels = _inspect(path, signatures[SIGNATURE])
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(os.path.normpath(path)))
    layer = SavedModelNetwork(loaded, x_name, t_name, key, out_channels, name=f"{name}_signature")
    x_t = keras.Input(image_shape, name="x_t")
    t = keras.Input((), name="t")
    return keras.Model([x_t, t], layer(x_t, t), name=name)
