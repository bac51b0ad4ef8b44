"""Datasets behind one small registry.

`load(name, split)` returns float32 images [N, H, W, C] in the data range [-1, 1].

Built in:
  "digits": the 1,797 handwritten digits that scikit-learn ships (8x8, grey
  levels 0..16, mapped to [-1, 1] as x / 8 - 1). Fixed split: a permutation of
  all indices drawn with numpy's default_rng(0); the first 297 form "heldout",
  the remaining 1,500 form "train". "all" is every image in the original order.
  Labels come with `load_labeled`.

Anything else is read by `ddss_tf.data_sources`: a tensorflow-datasets name
(e.g. "cifar10", needs the `tfds` extra and a prepared copy), a folder of PNG /
JPEG images, or an .npz file. `image_shape` = (H, W, C) fits the images to a
model's shape (channels, centre crop, resize; `data_sources.fit`).
"""

import dataclasses

import numpy as np

from ddss_tf import settings

__all__ = ["DataSpec", "load", "load_labeled", "names", "is_registered", "register",
           "DIGITS_HELDOUT"]


@dataclasses.dataclass
class DataSpec:
    """The real data a model was trained on, as `load` takes it (SearchConfig derives from it;
    the binaries' --dataset and --split are generated from it)."""
    dataset: str = settings.setting(
        "digits", "Real data the model was trained on: digits (bundled), a tensorflow-datasets "
        "name (e.g. cifar10; the tfds extra and a prepared copy), a folder of PNG/JPEG images "
        "or an .npz file (array 'images', 'x' or its only one); fitted to the model's image "
        "shape.")
    split: str = settings.setting(
        "train", "Split: train|heldout|all for digits, a tfds split (train, test, train[:10%]), "
        "an image folder's subfolder (train / all = every image), train / all for an .npz.")

DIGITS_HELDOUT = 297
_SPLITS = ("train", "heldout", "all")
_REGISTRY = {}


def register(name, loader):
    """Register loader(split) -> (images float32 [N, H, W, C] in [-1, 1], labels int [N] or None)."""
    _REGISTRY[name] = loader


def names():
    return sorted(_REGISTRY)


def is_registered(name):
    """True for a name of `names()` (its content is fixed by the package)."""
    return name in _REGISTRY


def load_labeled(name="digits", split="train", image_shape=None):
    """(images [N, H, W, C] float32 in [-1, 1], labels int64 [N] or None).

    name: a registered name, a tfds name, an image folder or an .npz file.
    image_shape: (H, W, C) to fit the images to, or None to keep them as stored.
    """
    if name not in _REGISTRY:
        from ddss_tf import data_sources  # imports TensorFlow (and tfds) only when needed

        return data_sources.load(name, split, image_shape)
    images, labels = _REGISTRY[name](split)
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        from ddss_tf import data_sources

        images = data_sources.fit(images, image_shape)
    return images, labels


def load(name="digits", split="train", image_shape=None):
    """Images [N, H, W, C] float32 in [-1, 1] (arguments as `load_labeled`)."""
    return load_labeled(name, split, image_shape)[0]


def _digits(split):
    if split not in _SPLITS:
        raise ValueError(f"unknown split {split!r} for digits; accepted: {', '.join(_SPLITS)}")
    from sklearn.datasets import load_digits  # the data ships inside scikit-learn

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    labels = bunch.target.astype(np.int64)
    if split != "all":
        order = np.random.default_rng(0).permutation(len(images))
        idx = np.sort(order[:DIGITS_HELDOUT] if split == "heldout" else order[DIGITS_HELDOUT:])
        images, labels = images[idx], labels[idx]
    return images, labels


register("digits", _digits)
