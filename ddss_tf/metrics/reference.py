"""Reference statistics of a data set under a feature network, cached on disk.

`reference_statistics(extractor, "digits", "train")` runs the extractor over
the split in batches (with a progress bar) and returns its features, mean,
covariance and logits. The result is cached as an .npz file together with a
fingerprint {dataset, split, feature network (name + weights digest), count,
version}, plus a digest of the images themselves ("data") for any data set whose
content the package does not fix (a tfds name, image folder or .npz file, or a
registered one fitted to another image shape); a later call with the same
fingerprint reads the file instead of recomputing, any difference (other count,
retrained network, edited images, ...) recomputes and overwrites it.

Features and logits are stored in float32 (the networks compute in float32, so
nothing is lost); mean and covariance are float64, as the FID needs.
"""

import collections
import hashlib
import json
import os
import re
import zipfile

import numpy as np

from ddss_tf import data, files, interrupt
from ddss_tf.metrics import features as features_lib
from ddss_tf.metrics import scores

__all__ = ["Statistics", "compute_statistics", "reference_statistics", "default_cache_dir",
           "FINGERPRINT_VERSION"]

FINGERPRINT_VERSION = 1

Statistics = collections.namedtuple("Statistics", ["features", "mean", "cov", "logits", "fingerprint"])
Statistics.__doc__ = """Feature statistics of an image set.

features float32 [N, d]; mean float64 [d]; cov float64 [d, d] (ddof=1);
logits float32 [N, K] or None; fingerprint: dict or None (not cached).
"""


def default_cache_dir():
    """$DDSS_TF_CACHE/reference, or ~/.cache/ddss_tf/reference."""
    root = os.environ.get("DDSS_TF_CACHE", os.path.join("~", ".cache", "ddss_tf"))
    return os.path.join(os.path.expanduser(root), "reference")


def compute_statistics(extractor, images, batch_size=256, clip=False, progress=True, fingerprint=None):
    """Statistics of images [N, H, W, C] (N >= 2) in the extractor's data range."""
    out = features_lib.extract(extractor, images, batch_size=batch_size, clip=clip, progress=progress)
    mean, cov = scores.feature_statistics(out.features)
    logits = None if out.logits is None else out.logits.astype(np.float32)
    return Statistics(out.features.astype(np.float32), mean, cov, logits, fingerprint)


def _fingerprint(dataset, split, extractor, count, images, image_shape):
    out = {"dataset": dataset, "split": split, "features": extractor.fingerprint,
           "count": int(count), "version": FINGERPRINT_VERSION}
    fixed = data.is_registered(dataset) and (
        image_shape is None or data.load(dataset, split).shape[1:] == tuple(image_shape))
    if not fixed:  # a folder, file or tfds copy may change under the same name
        out["data"] = hashlib.sha1(np.ascontiguousarray(images[:count]).tobytes()).hexdigest()[:16]
    return out


def _cache_name(dataset, split, extractor):
    """<dataset>-<split>-<extractor>.npz, with a path or tfds slice made file-name safe."""
    stem = f"{dataset}-{split}-{extractor.name}"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.")
    if safe != stem:
        safe += "-" + hashlib.sha1(stem.encode()).hexdigest()[:8]
    return safe + ".npz"


def _read(path, fingerprint):
    """Cached Statistics when path holds the same fingerprint, else None."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if json.loads(str(npz["fingerprint"])) != fingerprint:
                return None
            logits = npz["logits"] if "logits" in npz.files else None
            return Statistics(npz["features"], npz["mean"], npz["cov"], logits, fingerprint)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _write(path, stats):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    arrays = {"features": stats.features, "mean": stats.mean, "cov": stats.cov,
              "fingerprint": np.asarray(json.dumps(stats.fingerprint, sort_keys=True))}
    if stats.logits is not None:
        arrays["logits"] = stats.logits
    with files.atomic_file(path, "wb") as f:
        np.savez(f, **arrays)


def reference_statistics(extractor, dataset="digits", split="train", count=None, batch_size=256,
                         cache_dir=None, progress=True, image_shape=None, images=None):
    """Statistics of a registered data set's split, computed once and cached.

    Args:
      extractor: a FeatureExtractor whose data range matches the data set's.
      dataset, split: as `ddss_tf.data.load` accepts them.
      count: use the first `count` images of the split (default: all of them).
      batch_size: images per forward pass.
      cache_dir: where the .npz lives (default: `default_cache_dir()`); the file
        is <dataset>-<split>-<extractor.name>.npz (a path or tfds slice made file-name
        safe, with a hash of the original).
      progress: show a progress bar while computing.
      image_shape: (H, W, C) the images are fitted to (the model's; `data.load`), or None
        for the data set as stored.
      images: what `data.load(dataset, split, image_shape)` returns, when the caller has
        already loaded it (a decoded folder or tfds split is then not read again).

    Returns:
      Statistics, with the fingerprint that identifies the cache entry.
    """
    if images is None:
        images = data.load(dataset, split, image_shape)
    count = len(images) if count is None else int(count)
    if len(images) < 2:
        raise ValueError(f"the data set {dataset} (split {split!r}) holds {len(images)} "
                         "image(s); its statistics (FID, KID) need at least 2 real images")
    if not 2 <= count <= len(images):
        raise ValueError(f"count {count} is out of range: the data set {dataset} (split "
                         f"{split!r}) holds {len(images)} images; give 2 to {len(images)}")
    fingerprint = _fingerprint(dataset, split, extractor, count, images, image_shape)
    cache_dir = default_cache_dir() if cache_dir is None else os.path.expanduser(cache_dir)
    path = os.path.join(cache_dir, _cache_name(dataset, split, extractor))
    cached = _read(path, fingerprint)
    if cached is not None:
        return cached
    with interrupt.phase(f"the reference statistics of {dataset}/{split} ({extractor.name})"):
        stats = compute_statistics(extractor, images[:count], batch_size=batch_size,
                                   progress=progress, fingerprint=fingerprint)
        _write(path, stats)
    return stats
