"""A small convolutional classifier whose penultimate layer is a feature space.

The bundled digits classifier (and the second, independently trained one used
as a held-out metric) are built here. The penultimate activations come out of
the layer named "features" (`FEATURES_LAYER`; `metrics.from_keras_classifier` reads
them there).
"""

import keras
from keras import layers

__all__ = ["build_classifier", "FEATURES_LAYER", "DEFAULT_CONFIG"]

FEATURES_LAYER = "features"

DEFAULT_CONFIG = dict(
    image_shape=(8, 8, 1),
    num_classes=10,
    channels=(32, 64),
    feature_dim=128,
    dropout=0.3,
)


def build_classifier(config=None, name="classifier"):
    """images [B, H, W, C] in [-1, 1] -> logits [B, num_classes].

    config keys: image_shape, num_classes, channels (one 3x3 conv + swish per
    entry, each after the first preceded by 2x2 average pooling when the
    resolution allows), feature_dim (width of the "features" layer), dropout.
    """
    cfg = dict(DEFAULT_CONFIG, **(config or {}))
    x_in = keras.Input(shape=tuple(cfg["image_shape"]), name="images")
    h = x_in
    size = cfg["image_shape"][0]
    for i, ch in enumerate(cfg["channels"]):
        if i > 0 and size >= 4:
            h = layers.AveragePooling2D(2, name=f"pool{i}")(h)
            size //= 2
        h = layers.Conv2D(ch, 3, padding="same", activation="swish", name=f"conv{i}")(h)
    h = layers.Flatten(name="flatten")(h)
    h = layers.Dropout(cfg["dropout"], name="dropout")(h)
    feats = layers.Dense(cfg["feature_dim"], activation="swish", name=FEATURES_LAYER)(h)
    logits = layers.Dense(cfg["num_classes"], name="logits")(feats)
    return keras.Model(x_in, logits, name=name)
