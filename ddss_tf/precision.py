"""Networks in bfloat16 for accelerators, with everything around them in float32.

    den16 = precision.denoiser(den, "bfloat16")        # the diffusion network computes in bf16
    ext16 = precision.extractor(extractor, "bfloat16")  # and a Keras feature network

`ddss_search --precision=bfloat16` trains through these. In the copies, the convolutions
and dense layers (where the FLOPs are) compute in bfloat16 with float32 variables, Keras'
"mixed_bfloat16" policy; everything else stays float32: normalisations, attention softmax,
the residual stream (`nets.unet` casts at its sums), the UNet's time MLP and output
convolution (`unet.FULL_PRECISION`), and the layers producing a model's outputs. Inputs enter
as float32 and outputs leave as float32, so the sampler's coefficients, the chain's
accumulation of states and the KID loss are float32 too. bfloat16 holds 8 significant bits:
in the time path, t = 999 would read 1000, and a whole network in bfloat16 moved the digits
model's eps by 0.4% against 0.05-0.2% for a step of t at high noise (docs/scale.md).

Only Keras networks can change precision: a SavedModel or Inception graph (diffusion or
feature network) runs as it was saved (float32 on CPU and GPU; on a TPU, XLA multiplies
float32 convolutions and matmuls in bfloat16 passes at its default precision anyway).
Evaluation, the final comparison and the export use the float32 networks.
"""

import keras

from ddss_tf import denoisers
from ddss_tf.metrics import features as features_lib
from ddss_tf.nets import unet

__all__ = ["PRECISIONS", "keras_network", "denoiser", "extractor"]

PRECISIONS = ("float32", "bfloat16")
_MIXED = {"bfloat16": "mixed_bfloat16"}
_NARROW = (keras.layers.Conv2D, keras.layers.Dense)


def _check(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; accepted: {', '.join(PRECISIONS)}")


def _is_graph(model):
    """True for networks that are TF graphs under a Keras wrapper (nets.saved_model_net)."""
    return any(getattr(layer, "runs_own_variables", False) for layer in model.layers)


def keras_network(model, precision):
    """`model` itself for float32; else a copy of the functional Keras model (same weights, not
    shared) whose convolutions and dense layers compute in `precision` (see the module doc);
    None when it cannot change precision."""
    _check(precision)
    if precision == "float32":
        return model
    if not getattr(model, "inputs", None) or _is_graph(model):
        return None
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.trainable = False
    outputs = {id(t._keras_history.operation) for t in copy.outputs}
    # Every layer, those built inside custom layers (a UNet block's convolutions) included.
    for layer in copy._flatten_layers(include_self=False):
        if (isinstance(layer, _NARROW) and layer.name not in unet.FULL_PRECISION
                and id(layer) not in outputs):
            layer.dtype_policy = _MIXED[precision]
    return copy


def denoiser(den, precision):
    """`den` with its Keras network computing in `precision` (den itself for float32, or when
    the network is a graph that runs as saved)."""
    network = getattr(den, "network", None)
    copy = None if network is None else keras_network(network, precision)
    if copy is None or copy is network:
        return den
    return denoisers.from_keras_model(copy, den.schedule, prediction=den.prediction,
                                      clip_x0=den.clip_x0, data_range=den.data_range)


def extractor(ext, precision):
    """A FeatureExtractor whose Keras network computes in `precision` (ext itself for float32
    or for feature networks that are graphs, e.g. Inception files)."""
    network = getattr(ext, "network", None)
    copy = None if network is None else keras_network(network, precision)
    if copy is None or copy is network:
        return ext
    return features_lib.from_keras_classifier(copy, name=ext.name, data_range=ext.data_range,
                                              fingerprint=ext.fingerprint)
