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

from ddss_tf.export.coefficients import (
    coefficients_document, load_coefficients, read_coefficients, write_coefficients)
from ddss_tf.export.exported import ExportedSampler, load_sampler, resolve_version_dir
from ddss_tf.export.ops import to_uint8
from ddss_tf.models import fingerprint as model_fingerprint  # ddss_tf.models owns it
from ddss_tf.noise import seed_pair
from ddss_tf.export.saved_model import SIGNATURES, export_sampler, next_version

__all__ = [
    "write_coefficients", "load_coefficients", "read_coefficients", "coefficients_document",
    "model_fingerprint",
    "export_sampler", "next_version", "SIGNATURES",
    "load_sampler", "resolve_version_dir", "ExportedSampler",
    "seed_pair", "to_uint8",
]
