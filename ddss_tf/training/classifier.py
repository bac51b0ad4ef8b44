"""Train the small digits classifier whose penultimate layer is the default feature space.

Adam with cosine decay, cross-entropy, label smoothing and random one-pixel
shifts as augmentation; trained on the "train" split, accuracy measured on
the "heldout" split and stored with the weights so a test can check that the
shipped model reproduces it.
"""

import dataclasses
import os
import time

import keras
import numpy as np

from ddss_tf import data, files, interrupt
from ddss_tf.nets import classifier as classifier_net

__all__ = ["ClassifierConfig", "train", "evaluate"]


@dataclasses.dataclass
class ClassifierConfig:
    dataset: str = "digits"
    net: dict = dataclasses.field(default_factory=lambda: dict(
        channels=list(classifier_net.DEFAULT_CONFIG["channels"]),
        feature_dim=classifier_net.DEFAULT_CONFIG["feature_dim"],
        dropout=classifier_net.DEFAULT_CONFIG["dropout"]))
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 2e-3
    label_smoothing: float = 0.05
    max_shift: int = 1
    seed: int = 0

    def validate(self):
        if self.dataset not in data.names():
            raise ValueError(f"unknown dataset {self.dataset!r}; accepted: {', '.join(data.names())}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.max_shift <= 3:
            raise ValueError(f"max_shift must be in [0, 3], got {self.max_shift}")


def _shift(images, max_shift, rng):
    """Random integer translations by up to max_shift pixels, padding with background (-1)."""
    if max_shift == 0:
        return images
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)),
                    constant_values=-1.0)
    dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
    return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def evaluate(model, images, labels, batch_size=512):
    """(accuracy, mean cross-entropy) of logits-model on labelled images."""
    logits = model.predict(images, batch_size=batch_size, verbose=0)
    loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return float(np.mean(np.argmax(logits, -1) == labels)), float(np.mean(loss))


# What rerunning ddss_train_classifier after a stop does (it does not resume).
RERUN = "nothing was written; rerun the same command to train it again from the start"


def train(cfg, out_dir, log=print):
    """Train, evaluate on the held-out split and write out_dir/{config.json, model.weights.h5}."""
    cfg.validate()
    files.writable_dir(out_dir, "the output directory")  # before the training, not after it
    x_train, y_train = data.load_labeled(cfg.dataset, "train")
    x_held, y_held = data.load_labeled(cfg.dataset, "heldout")
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net_cfg = dict(cfg.net, image_shape=list(x_train.shape[1:]))
    model = classifier_net.build_classifier(net_cfg)
    steps = cfg.epochs * int(np.ceil(len(x_train) / cfg.batch_size))
    lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, steps)
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.CategoricalCrossentropy(
                      from_logits=True, label_smoothing=cfg.label_smoothing),
                  metrics=["accuracy"])
    y_onehot = np.eye(10, dtype=np.float32)[y_train]
    start = time.time()
    with interrupt.phase("training the classifier", rerun=RERUN):
        _fit(cfg, model, x_train, y_onehot, x_held, y_held, rng, log)
    acc, loss = evaluate(model, x_held, y_held)
    with files.atomic_path(os.path.join(out_dir, "model.weights.h5")) as tmp:
        model.save_weights(tmp)
    meta = dict(kind="classifier", net=net_cfg, dataset=cfg.dataset, train_split="train",
                heldout_accuracy=acc, heldout_loss=loss, train_config=dataclasses.asdict(cfg),
                train_seconds=round(time.time() - start, 1), data_range=[-1.0, 1.0])
    files.write_json(os.path.join(out_dir, "config.json"), meta, sort_keys=False)
    return meta


def _fit(cfg, model, x_train, y_onehot, x_held, y_held, rng, log):
    for epoch in range(cfg.epochs):
        x_aug = _shift(x_train, cfg.max_shift, rng)
        hist = model.fit(x_aug, y_onehot, batch_size=cfg.batch_size, epochs=1, verbose=0,
                         shuffle=True)
        if (epoch + 1) % 10 == 0 or epoch + 1 == cfg.epochs:
            acc, loss = evaluate(model, x_held, y_held)
            log(f"epoch {epoch + 1}/{cfg.epochs} train_loss={hist.history['loss'][-1]:.4f} "
                f"heldout_accuracy={acc:.4f} heldout_loss={loss:.4f}")
