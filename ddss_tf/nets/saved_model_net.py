"""A SavedModel diffusion network as a frozen Keras model, so it goes wherever a Keras one goes.

    net = saved_model_net.load("path/to/saved_model")   # keras.Model [x_t, t(, c)] -> prediction

The SavedModel needs a `serving_default` signature with two float inputs, one
[B, H, W, C] (x_t; H, W and C fixed) and one [B] (t, real-valued model time),
told apart by rank whatever their names, optionally a third, the condition c (int labels
[B] or a float embedding [B, D]; the Keras model then takes [x_t, t, c]), and one output
shaped like x_t (eps, x0 or v), or [B, H, W, 2C] (eps and a learned variance; see
`denoisers.from_keras_model`). Anything else is one ValueError naming what the signature has.

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
_CONTRACT = ("(x_t float [B, H, W, C], t float [B][, c int [B] or float [B, D]]) -> one output "
             "[B, H, W, C] (or [B, H, W, 2C]: eps and a learned variance)")


class SavedModelNetwork(keras.layers.Layer):
    runs_own_variables = True

    """The `SIGNATURE` function of a loaded SavedModel as a frozen layer (x_t, t) -> prediction.

    Its graph reads the SavedModel's own variables (`runs_own_variables`), not the layer's
    weights: a call cannot be given other weight values, and the looped chain (whose
    gradient would capture those variables inside a tf.while_loop) stays unrolled.

    Args:
      loaded: the object `tf.saved_model.load` returned (kept alive with the layer).
      x_name, t_name: the signature's input names for x_t and t.
      c_name: the condition's input name, or None (unconditional).
      output_key: the signature's output name.
      out_channels: the output's channels when they differ from x_t's (2C).
    """

    def __init__(self, loaded, x_name, t_name, output_key, out_channels=None, c_name=None,
                 **kwargs):
        super().__init__(trainable=False, **kwargs)
        self._out_channels = out_channels
        self._loaded = loaded
        self._fn = loaded.signatures[SIGNATURE]
        self._x_name, self._t_name, self._output_key = x_name, t_name, output_key
        self._c_name = c_name
        specs = self._fn.structured_input_signature[1]
        self._x_dtype, self._t_dtype = specs[x_name].dtype, specs[t_name].dtype
        self._c_dtype = specs[c_name].dtype if c_name else None
        for i, v in enumerate(self._fn.variables):
            copy = self.add_weight(shape=tuple(v.shape), dtype=v.dtype.name, initializer="zeros",
                                   trainable=False, name=f"saved_model_variable_{i}")
            copy.assign(v.numpy())

    def call(self, x_t, t, c=None):
        args = {self._x_name: tf.cast(x_t, self._x_dtype), self._t_name: tf.cast(t, self._t_dtype)}
        if self._c_name:
            args[self._c_name] = tf.cast(c, self._c_dtype)
        return tf.cast(self._fn(**args)[self._output_key], tf.float32)

    def compute_output_spec(self, x_t, t, c=None):
        shape = tuple(x_t.shape[:-1]) + (self._out_channels or x_t.shape[-1],)
        return keras.KerasTensor(shape, dtype="float32")


def _fail(path, what):
    raise ValueError(f"the SavedModel {path} does not fit the model contract {_CONTRACT}: {what}")


def _shape(spec):
    return "?" if spec.shape.rank is None else str([d for d in spec.shape.as_list()])


def _inspect(path, fn):
    """(x_name, t_name, c_name or None, output_key, image_shape, output channels) of a
    signature, or ValueError."""
    inputs = fn.structured_input_signature[1]
    described = ", ".join(f"{k} {v.dtype.name} {_shape(v)}" for k, v in sorted(inputs.items()))
    images = [k for k, v in inputs.items() if v.shape.rank == 4]
    times = [k for k, v in inputs.items() if v.shape.rank == 1 and v.dtype.is_floating]
    rest = [k for k in inputs if k not in images + times]
    conditions = [k for k in rest if (inputs[k].shape.rank == 1 and inputs[k].dtype.is_integer)
                  or (inputs[k].shape.rank == 2 and inputs[k].dtype.is_floating
                      and inputs[k].shape[1] is not None)]
    if len(inputs) == 2 and len(images) == 1 and not times and inputs[rest[0]].shape.rank == 1:
        _fail(path, f"input {rest[0]} is {inputs[rest[0]].dtype.name}, not float (t is "
              "real-valued: learned query times fall between integer steps)")
    if len(images) != 1 or len(times) != 1 or len(rest) > 1 or rest != conditions:
        _fail(path, f"{SIGNATURE} takes {described or 'no inputs'}")
    (x_name,), (t_name,) = images, times
    c_name = conditions[0] if conditions else None
    if not inputs[x_name].dtype.is_floating:
        _fail(path, f"input {x_name} is {inputs[x_name].dtype.name}, not float")
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
    return x_name, t_name, c_name, key, tuple(int(d) for d in image_shape), out_channels


def load(path, name=None):
    """keras.Model [x_t [B, H, W, C], t [B]] -> prediction over the SavedModel at `path`."""
    try:
        # The loader only logs a damaged fingerprint.pb (with a traceback): read it first.
        if os.path.exists(os.path.join(path, "fingerprint.pb")):
            tf.saved_model.experimental.read_fingerprint(path)
        loaded = tf.saved_model.load(path)
    except Exception as e:  # protobuf / TF raise many types for a foreign or damaged directory
        raise ValueError(f"cannot load the SavedModel {path} ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]})") from e
    signatures = getattr(loaded, "signatures", {})
    if SIGNATURE not in signatures:
        _fail(path, f"no {SIGNATURE} signature (it has: {', '.join(signatures) or 'none'})")
    x_name, t_name, c_name, key, image_shape, out_channels = _inspect(path, signatures[SIGNATURE])
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(os.path.normpath(path)))
    layer = SavedModelNetwork(loaded, x_name, t_name, key, out_channels, c_name,
                              name=f"{name}_signature")
    inputs = [keras.Input(image_shape, name="x_t"), keras.Input((), name="t")]
    if c_name:
        spec = signatures[SIGNATURE].structured_input_signature[1][c_name]
        inputs.append(keras.Input(tuple(spec.shape[1:]), dtype=spec.dtype.name, name="c"))
    return keras.Model(inputs, layer(*inputs), name=name)
