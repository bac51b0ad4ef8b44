"""Networks in bfloat16 for accelerators, with everything around them in float32.

    den16 = precision.denoiser(den, "bfloat16")        # the diffusion network computes in bf16
    ext16 = precision.extractor(extractor, "bfloat16")  # and a Keras feature network

`ddss_search --precision=bfloat16` trains through these: the networks' layers compute in
bfloat16 (Keras' "mixed_bfloat16" policy: variables stay float32 and are cast per call),
their inputs enter as float32 and their outputs are cast back to float32, so the sampler's
coefficients, the chain's accumulation of states and the KID loss stay float32. The
sinusoidal time embedding keeps float32: bfloat16 holds 8 significant bits, so t = 999 would
read 1000 and nearby learned query times would collapse onto the same embedding.

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
_FLOAT32_LAYERS = (unet.TimestepEmbedding, keras.layers.InputLayer)


def _check(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; accepted: {', '.join(PRECISIONS)}")


def _is_graph(model):
    """True for networks that are TF graphs under a Keras wrapper (nets.saved_model_net)."""
    return any(getattr(layer, "runs_own_variables", False) for layer in model.layers)


def keras_network(model, precision):
    """`model` itself for float32; else a copy of the functional Keras model (same weights, not
    shared) whose layers compute in `precision`; None when it cannot change precision."""
    _check(precision)
    if precision == "float32":
        return model
    if not getattr(model, "inputs", None) or _is_graph(model):
        return None

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Layer) and not isinstance(layer, _FLOAT32_LAYERS):
            config["dtype"] = _MIXED[precision]
        return layer.__class__.from_config(config)

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(_MIXED[precision])  # sublayers made in build() take it
    try:
        copy = keras.models.clone_model(model, clone_function=clone)
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    copy.trainable = False
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
