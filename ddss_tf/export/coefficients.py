"""coefficients.json: a learned sampler as portable numbers, and the loader that rebuilds it.

    export.write_coefficients(layer, "coefficients.json", model_fingerprint)
    layer = export.load_coefficients("coefficients.json", denoiser)   # checks the model

The file (schema in docs/coefficients_json.md, format_version 1) holds the family,
K, the query times, every coefficient after the constraint maps (enough for another
runtime to run the sampler from the family's step equation), the schedule, the
model it was learned for (fingerprint, image shape, parametrisation), the layer's
constructor config and its raw variables. The loader rebuilds the Keras layer from
the config and the variables (bit-exact), then checks that the rebuilt layer's
coefficients are the ones written.
"""

import json

import numpy as np

from ddss_tf import __version__, files, samplers, schedules
from ddss_tf import models

__all__ = ["write_coefficients", "load_coefficients", "read_coefficients", "coefficients_document",
           "FORMAT", "FORMAT_VERSION"]

FORMAT = "ddss_tf.coefficients"
FORMAT_VERSION = 1
_REQUIRED = ("family", "num_steps", "query_times", "coefficients", "variables", "schedule",
             "model", "layer_config")
_TYPES = dict(family=str, num_steps=int, query_times=list, coefficients=dict, variables=dict,
              schedule=dict, model=dict, layer_config=dict)


def coefficients_document(layer, model_fingerprint, image_shape=None, guidance=None):
    """The coefficients.json content of a sampler layer, as a dict (see the schema doc); for a
    sampler searched on a conditional model with `guidance` (ddss_tf.guidance.Guidance), its
    classes, null label and the guidance scales the sampler serves ("guidance": the scale
    searched, or the anchors' range of a sampler across scales)."""
    den = layer.denoiser
    network = getattr(den, "network", None)
    if image_shape is None and network is not None:
        image_shape = models.image_shape(network)
    coefs = layer.coefficients()
    bad = [k for k, v in coefs.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ValueError(f"the sampler's coefficients {bad} are not finite; nothing to export")
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ddss_tf_version": __version__,
        "family": layer.family,
        "num_steps": int(layer.num_steps),
        "query_times": _float32_list(coefs["query_times"]),
        "coefficients": {k: _float32_list(v) for k, v in coefs.items()},
        "schedule": den.schedule.get_config(),
        "model": {
            "fingerprint": str(model_fingerprint),
            "image_shape": None if image_shape is None else [int(s) for s in image_shape],
            "prediction": den.prediction,
            "clip_x0": bool(den.clip_x0),
            "data_range": [float(v) for v in den.data_range],
        },
        "layer_config": layer.get_config(),
        "variables": {v.name: _float32_list(v.numpy()) for v in layer.weights},
    }
    if guidance is not None:
        doc["guidance"] = {"num_classes": guidance.num_classes,
                           "null_label": int(guidance.denoiser.null_condition),
                           "scale_range": [float(w) for w in guidance.scale_range(layer)]}
    return doc


def write_coefficients(layer, path, model_fingerprint, image_shape=None, guidance=None):
    """Write `layer`'s coefficients.json to `path` atomically; returns `path`.

    Args:
      layer: a `samplers.Sampler`.
      path: destination file.
      model_fingerprint: the model's identity, e.g. `models.fingerprint(network)`.
      image_shape: [H, W, C]; default: read from the denoiser's Keras network.
      guidance: for a conditional model's sampler, its ddss_tf.guidance.Guidance.
    """
    text = dumps(coefficients_document(layer, model_fingerprint, image_shape, guidance))
    with files.atomic_file(path) as f:
        f.write(text)
    return path


def read_coefficients(path):
    """The coefficients.json at `path` as a dict, with one clear error when it is not one."""
    try:
        doc = files.read_json(path, "coefficients.json")
    except FileNotFoundError:
        raise FileNotFoundError(f"coefficients file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable coefficients.json ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ddss_tf coefficients.json (no \"format\": \"{FORMAT}\")")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format_version {doc.get('format_version')!r}; this ddss_tf "
                         f"reads format_version {FORMAT_VERSION}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise ValueError(f"{path} is malformed: missing {', '.join(missing)}")
    wrong = [f'"{k}" is {type(doc[k]).__name__}, not {kind.__name__}' for k, kind in _TYPES.items()
             if not isinstance(doc[k], kind) or isinstance(doc[k], bool)]
    if wrong:
        raise ValueError(f"{path} is malformed: {'; '.join(wrong)}")
    return doc


def load_coefficients(path, denoiser, remat=None, check_fingerprint=True):
    """Rebuild the Keras sampler layer of a coefficients.json over `denoiser`.

    Checks first that the file was written for this model: weights fingerprint,
    schedule, image shape, parametrisation and data range; any difference is one
    ValueError naming every mismatch. The layer gets the file's variables exactly.

    Args:
      path: a coefficients.json (`write_coefficients`).
      denoiser: a `denoisers.Denoiser` over the model the sampler was learned for.
      remat: override the layer's rematerialisation (e.g. False for sampling only).
      check_fingerprint: compare the Keras network's weights digest (needs
        denoiser.network); False skips only this check.
    Returns:
      A `samplers.Sampler` equal to the one written.
    """
    doc = read_coefficients(path)
    mismatches = _model_mismatches(doc, denoiser, check_fingerprint)
    if mismatches:
        raise ValueError(f"{path} does not match the model: " + "; ".join(mismatches))
    config = dict(doc["layer_config"])
    if remat is not None:
        config["remat"] = bool(remat)
    if config.get("family") != doc["family"] or config.get("num_steps") != doc["num_steps"]:
        raise ValueError(f"{path} is inconsistent: layer_config disagrees with family / num_steps")
    try:
        layer = samplers.from_config(config, denoiser)
    except (TypeError, AttributeError, KeyError, ValueError) as e:  # a hand-edited layer_config
        raise ValueError(f"{path}: layer_config is invalid ({type(e).__name__}: {e})") from None
    _assign_variables(layer, doc["variables"], path)
    _check_coefficients(layer, doc["coefficients"], path)
    return layer


def _model_mismatches(doc, denoiser, check_fingerprint):
    """Every way the document's "model" and "schedule" differ from `denoiser` (list of str)."""
    model, out = doc["model"], []
    network = getattr(denoiser, "network", None)
    if check_fingerprint:
        if network is None:
            raise ValueError("cannot check the model fingerprint of a denoiser without a Keras "
                             "network; pass check_fingerprint=False to skip that check")
        want, have = str(model.get("fingerprint")), models.fingerprint(network)
        if want.rsplit(":", 1)[-1] != have.rsplit(":", 1)[-1]:
            out.append(f"weights fingerprint {want} != {have} (learned for another model)")
    try:
        same = schedules.same(schedules.from_config(doc["schedule"]), denoiser.schedule)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the schedule in the coefficients file is invalid ({e})") from e
    if not same:
        out.append(f"schedule {doc['schedule']} != {denoiser.schedule.get_config()}")
    shape = models.image_shape(network) if network is not None else None
    shape = None if shape is None else list(shape)
    if shape is not None and model.get("image_shape") not in (None, shape):
        out.append(f"image shape {model.get('image_shape')} != {shape}")
    for key, have in (("prediction", denoiser.prediction), ("clip_x0", denoiser.clip_x0),
                      ("data_range", list(denoiser.data_range))):
        if key in model and model[key] != have:
            out.append(f"{key} {model[key]!r} != {have!r}")
    return out


def _assign_variables(layer, values, path):
    have = {v.name: v for v in layer.weights}
    if sorted(have) != sorted(values):
        raise ValueError(f"{path} holds variables {sorted(values)} but a {layer.family} layer with "
                         f"this config has {sorted(have)}")
    for name, var in have.items():
        try:
            value = np.asarray(values[name], np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{path}: variable {name} is not an array of numbers") from None
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{path}: variable {name} holds non-finite values")
        if value.shape != tuple(var.shape):
            raise ValueError(f"{path}: variable {name} has shape {list(value.shape)}, the layer "
                             f"expects {list(var.shape)}")
        var.assign(value)


def _check_coefficients(layer, written, path):
    """The rebuilt layer must compute the coefficients the file lists (a hand edit shows here)."""
    have = layer.coefficients()
    if sorted(have) != sorted(written):
        raise ValueError(f"{path} lists coefficients {sorted(written)}, the layer computes "
                         f"{sorted(have)}")
    for key, value in have.items():
        want = np.asarray(written[key], np.float64)
        if want.shape != value.shape or not np.allclose(value, want, rtol=1e-5, atol=1e-6):
            raise ValueError(f"{path}: coefficient {key} disagrees with the file's variables "
                             "(the file was edited, or written by an incompatible version)")


def _float32_list(values):
    """float32 values as (nested) lists of Python floats.

    Each float32 is written as its exact float64 repr, so reading it back as float64
    and casting to float32 gives the same bits (the shortest float32 decimal could
    double-round when a reader parses it as float64 first).
    """
    return np.asarray(values, np.float32).astype(np.float64).tolist()


def dumps(doc):
    """JSON text with one line per number array (readable, diff-friendly)."""
    return _render(doc, 0) + "\n"


def _render(obj, depth):
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {_render(v, depth + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and obj and all(isinstance(v, list) for v in obj):
        return "[\n" + ",\n".join(inner + _render(v, depth + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False, separators=(", ", ": "))
