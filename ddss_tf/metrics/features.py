"""Feature extractors behind one interface, and batched extraction to numpy.

A `FeatureExtractor` maps images [B, H, W, C] in its data range (any batch
size B) to features [B, d] and, when the network has a classification head,
logits [B, K]. Calls are plain differentiable TensorFlow ops, so the DDSS loss
can backpropagate through them into a sampler. Constructors:

  from_keras_classifier(model)   a classifier from `ddss_tf.nets.classifier`
                                 (features = the layer named "features");
  from_function(fn, name)        any differentiable fn(images) -> features
                                 (pixels, identity features in tests, ...);
  inception.load(path)           InceptionV3 pool_3 + logits from a local file.

`extract` runs an extractor over a whole image array in batches with a
progress bar and returns float64 numpy arrays for the evaluation metrics.
"""

import collections

import keras
import numpy as np
import tensorflow as tf

from ddss_tf import files, progress as progress_lib
from ddss_tf.metrics import _checks
from ddss_tf.nets import classifier as classifier_lib

__all__ = ["FeatureExtractor", "Extracted", "from_keras_classifier", "from_function", "extract"]

Extracted = collections.namedtuple("Extracted", ["features", "logits"])
Extracted.__doc__ = "features float64 [N, d]; logits float64 [N, K] or None."


class FeatureExtractor:
    """Images in the data range -> features (and logits), differentiable.

    Args:
      fn: images tensor [B, H, W, C] -> {"features": [B, d], "logits": [B, K]
        (optional)}; receives the images unchanged (float, data range).
      name: short name of the feature network (used in cache fingerprints).
      data_range: (low, high) of the images this extractor accepts.
      image_shape: (H, W, C) the network needs, None entries meaning "any";
        None for no constraint.
      channels: accepted channel counts, e.g. (1, 3); None for any.
      fingerprint: string identifying the network's weights; defaults to name.
      network: the underlying Keras model when there is one (ddss_tf.precision reads it).
    """

    def __init__(self, fn, name, data_range=(-1.0, 1.0), image_shape=None, channels=None,
                 fingerprint=None, network=None):
        self._fn = fn
        self.name = str(name)
        self.data_range = (float(data_range[0]), float(data_range[1]))
        if not self.data_range[0] < self.data_range[1]:
            raise ValueError(f"data_range must be (low, high) with low < high, got {data_range}")
        self.image_shape = None if image_shape is None else tuple(image_shape)
        self.channels = None if channels is None else tuple(channels)
        self.fingerprint = str(fingerprint) if fingerprint is not None else self.name
        self.network = network

    def __repr__(self):
        return f"FeatureExtractor(name={self.name!r}, data_range={self.data_range})"

    def _prepare(self, images):
        images = tf.convert_to_tensor(images)
        if not images.dtype.is_floating:
            images = tf.cast(images, tf.float32)
        _checks.image_tensor_shape(images.shape, self.image_shape, self.channels)
        return images

    def features_and_logits(self, images):
        """(features [B, d], logits [B, K] or None) for images [B, H, W, C] in the data range."""
        out = self._fn(self._prepare(images))
        return out["features"], out.get("logits")

    def __call__(self, images):
        """features [B, d] for images [B, H, W, C] in the data range (differentiable)."""
        return self.features_and_logits(images)[0]


def from_keras_classifier(model, name=None, data_range=(-1.0, 1.0), fingerprint=None):
    """Extractor over a Keras classifier built by `ddss_tf.nets.classifier.build_classifier`.

    features = the activations of the layer named "features" (the penultimate
    layer), logits = the model's output, in the dtype of its variables (float32 from
    a bfloat16-computing copy); the model runs with training=False (no dropout). Images are cast to the
    model's input dtype. The fingerprint (default) hashes the weights, so cached
    reference statistics follow retraining.
    """
    try:
        feats = model.get_layer(classifier_lib.FEATURES_LAYER).output
    except ValueError:
        raise ValueError(
            f"the classifier has no layer named {classifier_lib.FEATURES_LAYER!r}; "
            "build it with ddss_tf.nets.classifier.build_classifier") from None
    both = keras.Model(model.inputs, [feats, model.outputs[0]], name=f"{model.name}_features_logits")
    input_dtype = tf.as_dtype(model.inputs[0].dtype)
    name = name or model.name

    def fn(images):
        features, logits = both(tf.cast(images, input_dtype), training=False)
        return {"features": tf.cast(features, model.variable_dtype),
                "logits": tf.cast(logits, model.variable_dtype)}

    return FeatureExtractor(
        fn, name, data_range=data_range, image_shape=tuple(model.inputs[0].shape[1:]),
        fingerprint=fingerprint or f"{name}:{files.weights_digest(model.get_weights())}", network=model)


def from_function(fn, name, data_range=(-1.0, 1.0), image_shape=None, logits_fn=None,
                  fingerprint=None):
    """Extractor from a differentiable fn(images [B, H, W, C]) -> features [B, d].

    logits_fn: optional fn(images) -> logits [B, K]. fingerprint: identifies the
    function's weights in cache fingerprints (defaults to name).
    """
    def wrapped(images):
        out = {"features": fn(images)}
        if logits_fn is not None:
            out["logits"] = logits_fn(images)
        return out

    return FeatureExtractor(wrapped, name, data_range=data_range, image_shape=image_shape,
                            fingerprint=fingerprint)


def extract(extractor, images, batch_size=256, clip=False, progress=True):
    """Run `extractor` over all images in batches; float64 numpy out.

    Args:
      extractor: a FeatureExtractor.
      images: array [N, H, W, C] in the extractor's data range.
      batch_size: images per forward pass.
      clip: clip images to the data range first (e.g. samples of a sampler that
        does not clip); without it, values outside the range raise ValueError.
      progress: show a progress bar (ddss_tf.progress, on stderr).

    Returns:
      Extracted(features [N, d], logits [N, K] or None).
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    arr = np.asarray(images)
    if clip and np.issubdtype(arr.dtype, np.number):
        arr = np.clip(arr, *extractor.data_range)
    arr = _checks.images(arr, extractor.data_range, extractor.image_shape, extractor.channels)
    bar = progress_lib.Progress(len(arr), desc=f"{extractor.name} features") if progress else None
    feats, logits = [], []
    for start in range(0, len(arr), int(batch_size)):
        batch = arr[start:start + int(batch_size)]
        f, lg = extractor.features_and_logits(batch)
        feats.append(np.asarray(f, dtype=np.float64).reshape(len(batch), -1))
        if lg is not None:
            logits.append(np.asarray(lg, dtype=np.float64).reshape(len(batch), -1))
        if bar is not None:
            bar.update(start + len(batch))
    if bar is not None:
        bar.close()
    return Extracted(np.concatenate(feats), np.concatenate(logits) if logits else None)
