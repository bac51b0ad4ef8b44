"""A learned sampler as a TF Serving SavedModel and as portable coefficients.json.

    from ddss_tf import export
    export.write_coefficients(layer, "coefficients.json", export.model_fingerprint(net))
                                                      # (= models.fingerprint)
    layer = export.load_coefficients("coefficients.json", denoiser)   # checks it is the same model
    version_dir = export.export_sampler(layer, "export")                # export/<n>/ SavedModel
    sampler = export.load_sampler("export")                             # latest version
    sampler.sample(16, seed=0); sampler.from_noise(x_T, noise); sampler.coefficients()

Signatures of the SavedModel: `saved_model` module doc. Schema of the JSON:
docs/coefficients_json.md. Seeds: the serving signature's int32 pair [hi, lo] is the seed
noise.seed_pair(s) of ddss_tf.noise, and draws what noise.draw(s, K, [N, H, W, C]) draws.
"""

import warnings

from ddss_tf.export.coefficients import (
    coefficients_document, load_coefficients, read_coefficients, write_coefficients)
from ddss_tf.export.exported import ExportedSampler, load_sampler, resolve_version_dir
from ddss_tf.export.ops import to_uint8
from ddss_tf.models import fingerprint as model_fingerprint  # ddss_tf.models owns it
from ddss_tf.noise import seed_pair
from ddss_tf.export.saved_model import SIGNATURES, export_sampler, next_version

__all__ = [
    "write_coefficients", "load_coefficients", "read_coefficients", "coefficients_document",
    "model_fingerprint", "image_shape_of",
    "export_sampler", "next_version", "SIGNATURES",
    "load_sampler", "resolve_version_dir", "ExportedSampler",
    "draw_noise", "seed_pair", "to_uint8",
]


def image_shape_of(network):
    """Deprecated (kept for one release): `models.image_shape(network)`, as a list."""
    from ddss_tf import models

    warnings.warn("export.image_shape_of is deprecated; use ddss_tf.models.image_shape",
                  DeprecationWarning, stacklevel=2)
    shape = models.image_shape(network)
    return None if shape is None else list(shape)


def draw_noise(seed, num_samples, num_steps, image_shape, dtype=None):
    """Deprecated (kept for one release): `noise.draw(seed, num_steps, [num_samples,
    *image_shape])`, which ddss_tf.noise owns with the argument order of every other draw."""
    from ddss_tf import noise

    warnings.warn("export.draw_noise is deprecated; use ddss_tf.noise.draw(seed, num_steps, "
                  "[num_samples, *image_shape])", DeprecationWarning, stacklevel=2)
    kwargs = {} if dtype is None else dict(dtype=dtype)
    return noise.draw(seed, num_steps, [num_samples, *image_shape], **kwargs)
