"""Export a sampler with its frozen model as a versioned SavedModel that TF Serving loads.

    version_dir = export.export_sampler(layer, "workdir/export")   # -> workdir/export/<n>/

Signatures (K = layer.num_steps, [H, W, C] = the model's image shape, N <= max_num_samples):
  serving_default  (num_samples int32 [], seed int32 [2]) -> {"images": uint8 [N, H, W, C]}
                   seed (hi, lo) draws exactly noise.draw(hi * 2**32 + lo, K, [N, H, W, C])
                   (lo read as unsigned), so [0, s] is seed s; num_samples outside
                   [1, max_num_samples] fails with an InvalidArgument naming the bound.
                   The signature declares seed as int32 [-1] and checks its 2 entries at
                   run time: with a static [2], Grappler folds any shape check away and
                   TF Serving (which does not check shapes) would accept [hi, lo, junk].
  from_noise       (x_T float32 [N, H, W, C], noise float32 [K, N, H, W, C])
                   -> {"images": float32 in the data range, "images_uint8": uint8}
                   x_T and noise of another shape, or holding NaN / Infinity, fail with
                   an InvalidArgument, as does a chain whose images come out non-finite.
  coefficients     () -> {name: float32 array} for every coefficient and "query_times"

A sampler for a class-conditional model (searched with `guidance`, a ddss_tf.guidance.Guidance)
takes two more inputs in serving_default and from_noise: labels int32 [N] in [0, C) and
guidance_scale float32 [] within the range searched (`GUIDED_INPUTS`); a label or scale
outside fails with an InvalidArgument naming the range. coefficients.json records them
under "guidance".

`<n>/assets.extra/coefficients.json` describes the export (the coefficients.json
schema plus an "export" entry); TF Serving ignores that directory.

Keras 3 and the TF1 session loader (TF Serving, saved_model_cli): a SavedModel that
reaches its variables through Keras objects reloads in TF2 Python but fails in the
TF1 loader with "Could not find variable" (tensorflow issue 72963). Here the
signatures are plain tf.functions on a bare tf.Module that tracks the underlying
tf.Variables every signature captures (as keras.export.ExportArchive does), and no
Keras object is tracked at all.
"""

import os

import tensorflow as tf

from ddss_tf import files, interrupt
from ddss_tf import models
from ddss_tf import noise as noise_lib
from ddss_tf import samplers
from ddss_tf.export import coefficients as coefficients_lib
from ddss_tf.export import ops

__all__ = ["export_sampler", "next_version", "SIGNATURES", "GUIDED_INPUTS",
           "DEFAULT_MAX_NUM_SAMPLES", "METADATA_PATH"]

DEFAULT_MAX_NUM_SAMPLES = 256
METADATA_PATH = os.path.join("assets.extra", "coefficients.json")
SIGNATURES = {
    "serving_default": ("num_samples", "seed"),
    "from_noise": ("x_T", "noise"),
    "coefficients": (),
}
# The inputs a guided sampler's serving_default and from_noise take besides those.
GUIDED_INPUTS = ("labels", "guidance_scale")


def next_version(base_dir):
    """The next TF Serving version number in base_dir: 1 + the largest integer subdirectory."""
    try:
        names = os.listdir(base_dir)
    except FileNotFoundError:
        return 1
    versions = [int(n) for n in names
                if n.isdigit() and os.path.isdir(os.path.join(base_dir, n))]
    return max(versions, default=0) + 1


def export_sampler(layer, base_dir, max_num_samples=DEFAULT_MAX_NUM_SAMPLES, image_shape=None,
                   model_fingerprint=None, guidance=None):
    """Write `layer` and its frozen model as SavedModel `base_dir/<next version>/`.

    Args:
      layer: a `samplers.Sampler` whose denoiser wraps a Keras model (or a
        TF-traceable function, then image_shape and model_fingerprint are needed).
      base_dir: the model's directory as TF Serving sees it (--model_base_path).
      max_num_samples: the largest num_samples / batch a signature accepts.
      image_shape: [H, W, C]; default: the Keras model's input shape.
      model_fingerprint: default `model_fingerprint(network)`.
      guidance: the ddss_tf.guidance.Guidance a conditional model's sampler was searched with
        (the layer is built on its `unbound()` denoiser); the export takes labels and a
        guidance scale in `guidance.scale_range(layer)`: the scale searched, or the anchors'
        range of a layer with guidance_scales (whose coefficients follow the scale given).
    Returns:
      The new version directory. It appears complete or not at all (written to a
      temporary sibling and renamed).
    """
    if not isinstance(layer, samplers.Sampler):
        raise ValueError("export_sampler needs a samplers.Sampler layer, got "
                         f"{type(layer).__name__}")
    if isinstance(max_num_samples, bool) or int(max_num_samples) != max_num_samples \
            or max_num_samples < 1:
        raise ValueError(f"max_num_samples must be a positive integer, got {max_num_samples!r}")
    network = getattr(layer.denoiser, "network", None)
    if image_shape is None and network is not None:
        image_shape = models.image_shape(network)
    if image_shape is None or len(image_shape) != 3:
        raise ValueError("cannot tell the image shape [H, W, C] of the model; pass image_shape")
    if model_fingerprint is None:
        if network is None:
            raise ValueError("a denoiser without a Keras network needs model_fingerprint")
        model_fingerprint = models.fingerprint(network)
    image_shape = [int(s) for s in image_shape]
    doc = coefficients_lib.coefficients_document(layer, model_fingerprint, image_shape, guidance)
    signature_inputs = {k: list(v) + (list(GUIDED_INPUTS) if guidance and v else [])
                        for k, v in SIGNATURES.items()}
    doc["export"] = {"max_num_samples": int(max_num_samples), "signatures": signature_inputs}
    # A SavedModel never takes gradients: the copy is not rematerialised.
    module, signatures = _build_module(samplers.forward_copy(layer), image_shape,
                                       int(max_num_samples), guidance)
    with interrupt.phase(f"the export to {base_dir}"), \
            files.atomic_dir(base_dir, lambda: str(next_version(base_dir))) as out:
        tf.saved_model.save(module, out.tmp, signatures=signatures)
        files.write_bytes(os.path.join(out.tmp, METADATA_PATH),
                           coefficients_lib.dumps(doc).encode())
    return out.path


def _build_module(layer, image_shape, max_num_samples, guidance=None):
    """(tf.Module, {name: concrete function}) for the three signatures."""
    k = layer.num_steps
    data_range = layer.denoiser.data_range
    image = tf.TensorSpec([None, *image_shape], tf.float32)
    noise_spec = tf.TensorSpec([k, None, *image_shape], tf.float32)
    # A guided sampler's extra inputs (GUIDED_INPUTS), or none.
    extra = [] if guidance is None else [tf.TensorSpec([None], tf.int32),
                                         tf.TensorSpec([], tf.float32)]

    def chain(x_T, noise, n, *condition):
        if guidance is None:
            return layer(x_T, noise)
        labels, scale = _check_condition(*condition, n, guidance.num_classes,
                                         guidance.scale_range(layer))
        with layer.using_denoiser(guidance.denoiser.guided(labels, scale)):
            return layer(x_T, noise)

    def from_noise(x_T, noise, *condition):
        n = _check_batch(tf.shape(x_T)[0], max_num_samples, "the batch of x_T")
        # A signature call does not enforce the TensorSpec's K: a noise with more or fewer
        # steps than the sampler takes would be sliced silently or fail mid-chain.
        same_shape = tf.debugging.assert_equal(
            tf.shape(noise)[:2], tf.stack([tf.constant(k), n]),
            message=f"noise must be [K, N, H, W, C] with K = {k} (the steps of this sampler) and "
                    "N = the batch of x_T")
        # NaN / Inf in x_T or noise would come out as NaN images and a black uint8 image that
        # looks valid: refused here, in the graph, so TF Serving refuses them too.
        finite = [_assert_finite(x_T, "x_T"), _assert_finite(noise, "noise")]
        with tf.control_dependencies([same_shape] + finite):
            x0 = tf.cast(chain(x_T, noise, n, *condition), tf.float32)
        # Finite inputs far outside a normal draw (1e30) overflow in the chain: never a NaN
        # image, whatever the cause.
        with tf.control_dependencies([tf.debugging.Assert(
                tf.reduce_all(tf.math.is_finite(x0)),
                ["the sampler's images are not finite (NaN or Infinity): x_T and noise must be "
                 "standard normal draws"], name="images_are_finite")]):
            x0 = ops.clip_to_range(tf.identity(x0), data_range)
        return {"images": x0, "images_uint8": ops.to_uint8(x0, data_range)}

    def serving_default(num_samples, seed, *condition):
        n = _check_batch(num_samples, max_num_samples, "num_samples")
        pair = tf.debugging.assert_equal(
            tf.size(seed), 2, message="seed must be an int32 pair [hi, lo] (2 entries)")
        with tf.control_dependencies([pair]):
            x_T, noise = noise_lib.draw(tf.identity(seed), k, [n, *image_shape])
        return {"images": from_noise(x_T, noise, *condition)["images_uint8"]}

    def coefficients():
        return {key: tf.cast(v, tf.float32) for key, v in layer.coefficient_tensors().items()}

    # A guided sampler's signatures name their extra inputs (GUIDED_INPUTS).
    def guided_serving_default(num_samples, seed, labels, guidance_scale):
        return serving_default(num_samples, seed, labels, guidance_scale)

    def guided_from_noise(x_T, noise, labels, guidance_scale):
        return from_noise(x_T, noise, labels, guidance_scale)

    guided = guidance is not None
    fns = {
        "serving_default": tf.function(
            guided_serving_default if guided else serving_default,
            input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([None], tf.int32)] + extra,
            autograph=False),
        "from_noise": tf.function(guided_from_noise if guided else from_noise,
                                  input_signature=[image, noise_spec] + extra, autograph=False),
        "coefficients": tf.function(coefficients, input_signature=[], autograph=False),
    }
    concrete = {name: fn.get_concrete_function() for name, fn in fns.items()}
    module = tf.Module()
    for name, fn in fns.items():
        setattr(module, name, fn)
    module.captured_variables = _captured_variables(concrete.values())
    return module, concrete


def _check_condition(labels, scale, n, c, scale_range):
    """(labels, scale) after asserting N labels in [0, C) and a scale in the range searched."""
    lo, hi = scale_range
    checks = [
        tf.debugging.assert_equal(tf.size(labels), n, message="labels must hold one label per "
                                  "sample (N of num_samples / of x_T)"),
        tf.debugging.assert_greater_equal(labels, 0, message=f"labels must be in [0, {c - 1}]"),
        tf.debugging.assert_less(labels, c, message=f"labels must be in [0, {c - 1}]"),
        tf.debugging.assert_greater_equal(scale, lo, message=f"guidance_scale must be in "
                                          f"[{lo:g}, {hi:g}] (the range searched)"),
        tf.debugging.assert_less_equal(scale, hi, message=f"guidance_scale must be in "
                                       f"[{lo:g}, {hi:g}] (the range searched)")]
    with tf.control_dependencies(checks):
        return tf.identity(labels), tf.identity(scale)


def _assert_finite(x, name):
    """An assert op (InvalidArgument) that every entry of x is finite. (tf.debugging's
    assert_all_finite raises InvalidArgument too, but its message names the tensor's graph
    name, not the input.)"""
    return tf.debugging.Assert(
        tf.reduce_all(tf.math.is_finite(x)),
        [f"{name} must hold finite numbers (no NaN or Infinity): standard normal draws"],
        name=f"{name}_is_finite")


def _check_batch(n, max_num_samples, what):
    """n (int32 scalar) after asserting 1 <= n <= max_num_samples, with the bound in the message."""
    message = f"{what} must be in [1, {max_num_samples}] (this export's max_num_samples)"
    checks = [tf.debugging.assert_greater_equal(n, 1, message=message),
              tf.debugging.assert_less_equal(n, max_num_samples, message=message)]
    with tf.control_dependencies(checks):
        return tf.identity(n)


def _captured_variables(concrete_fns):
    """Every tf.Variable the traced signatures read, each once (to be tracked by the module)."""
    seen, out = set(), []
    for fn in concrete_fns:
        for v in fn.variables:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out
