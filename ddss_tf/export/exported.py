"""Use an exported sampler from Python: inputs checked here, with one clear error each.

    sampler = export.load_sampler("workdir/export")     # base dir (latest version) or <n>/
    uint8 = sampler.sample(16, seed=0)                    # serving_default
    images, uint8 = sampler.from_noise(x_T, noise)        # from_noise
    sampler.coefficients()                                # dict of float32 numpy arrays

A sampler for a conditional model (`sampler.guidance`: its classes and scale range) takes
labels=[N labels] and guidance_scale=w in both calls.
"""

import json
import os

import numpy as np
import tensorflow as tf

from ddss_tf import noise as noise_lib
from ddss_tf.export import saved_model as saved_model_lib

__all__ = ["load_sampler", "resolve_version_dir", "ExportedSampler", "check_condition",
           "check_finite"]

# What a sampler says when the labels / guidance scale it needs, or refuses, are (not) given.
NEEDS_CONDITION = ("this sampler is for a conditional model: give labels and guidance_scale "
                   "(ddss_sample --labels=... --guidance_scale=W)")
TAKES_NO_CONDITION = ("this sampler is for an unconditional model: it takes no labels or "
                      "guidance_scale")


def check_condition(labels, guidance_scale, n, num_classes, scale_range=None):
    """A sampler's labels and guidance scale, checked before it runs: (labels int32 [n],
    scale float), or None for an unconditional sampler (num_classes None), which takes
    neither. Labels are n integers in [0, num_classes); the scale a number >= 0 within
    scale_range (low, high) when given (the range searched). ValueError saying what is
    accepted. (The SavedModel's graph checks its inputs itself: saved_model.py.)"""
    if num_classes is None:
        if labels is not None or guidance_scale is not None:
            raise ValueError(TAKES_NO_CONDITION)
        return None
    if labels is None or guidance_scale is None:
        raise ValueError(NEEDS_CONDITION)
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) \
            or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be {n} integers in [0, {num_classes - 1}] (one per "
                         f"sample), got {labels.tolist()}")
    lo, hi = scale_range if scale_range is not None else (0.0, float("inf"))
    try:
        scale = float(guidance_scale)
    except (TypeError, ValueError):
        scale = float("nan")
    if not lo <= scale <= hi or not np.isfinite(scale):
        within = f"in [{lo:g}, {hi:g}] (the range searched)" if scale_range is not None \
            else "a finite number >= 0"
        raise ValueError(f"guidance_scale must be {within}, got {guidance_scale}")
    return labels.astype(np.int32), scale


def check_finite(**arrays):
    """ValueError naming the first of `arrays` (x_T, noise) that holds NaN or Infinity: a
    sampler would turn it into NaN images (and a black uint8 image that looks valid). The
    export's from_noise refuses them in its graph too (saved_model.py)."""
    for name, value in arrays.items():
        value = np.asarray(value)
        if not np.all(np.isfinite(value)):
            bad = np.argwhere(~np.isfinite(value))[0].tolist()
            raise ValueError(f"{name} must hold finite numbers (standard normal draws), but "
                             f"{name}{bad} is {value[tuple(bad)]}")


def resolve_version_dir(path):
    """A SavedModel directory: `path` itself, or its highest integer version subdirectory."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"exported sampler {path} does not exist")
    latest = saved_model_lib.next_version(path) - 1
    if latest < 1 or not os.path.isfile(os.path.join(path, str(latest), "saved_model.pb")):
        raise ValueError(f"{path} holds no exported sampler (expected saved_model.pb in it or in "
                         "an integer version subdirectory, as export_sampler writes)")
    return os.path.join(path, str(latest))


def load_sampler(path):
    """An `ExportedSampler` over the SavedModel at `path` (base or version directory)."""
    return ExportedSampler(resolve_version_dir(path))


class ExportedSampler:
    """A loaded export: metadata from assets.extra/coefficients.json, signatures checked."""

    def __init__(self, version_dir):
        meta_path = os.path.join(version_dir, saved_model_lib.METADATA_PATH)
        try:
            with open(meta_path) as f:
                self.metadata = json.load(f)
            self.num_steps = int(self.metadata["num_steps"])
            self.image_shape = list(self.metadata["model"]["image_shape"])
            self.data_range = tuple(self.metadata["model"]["data_range"])
            self.max_num_samples = int(self.metadata["export"]["max_num_samples"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{version_dir} is not a ddss_tf export ({meta_path}: "
                             f"{type(e).__name__}: {e})") from e
        self.guidance = self.metadata.get("guidance")
        self.path = version_dir
        try:
            # The loader only logs a damaged fingerprint.pb (with a traceback): read it first.
            if os.path.exists(os.path.join(version_dir, "fingerprint.pb")):
                tf.saved_model.experimental.read_fingerprint(version_dir)
            self._loaded = tf.saved_model.load(version_dir)
        except Exception as e:  # noqa: BLE001  (protobuf, the bundle reader: many types)
            msg = " ".join(str(getattr(e, "message", e)).split())[:160] or type(e).__name__
            raise ValueError(
                f"the exported sampler {version_dir} is damaged or incomplete: its "
                f"saved_model.pb, fingerprint.pb or variables/ do not read back "
                f"({type(e).__name__}: {msg}); "
                "copy the export again, or export the sampler again") from None
        self._signatures = self._loaded.signatures

    def sample(self, num_samples, seed, labels=None, guidance_scale=None):
        """uint8 [N, H, W, C] from serving_default; seed: an int in [0, 2**63) or an int pair;
        labels and guidance_scale: for a conditional model's sampler (`guidance`)."""
        n = self._check_num_samples(num_samples)
        pair = noise_lib.seed_pair(seed) if np.ndim(seed) == 0 else _check_pair(seed)
        out = self._signatures["serving_default"](
            num_samples=tf.constant(n, tf.int32), seed=tf.constant(pair, tf.int32),
            **self._condition(n, labels, guidance_scale))
        return out["images"].numpy()

    def _condition(self, n, labels, guidance_scale):
        """The guided signatures' extra inputs, checked ({} for an unconditional sampler)."""
        g = self.guidance
        checked = check_condition(labels, guidance_scale, n, g and g["num_classes"],
                                  g and g["scale_range"])
        if checked is None:
            return {}
        return dict(labels=tf.constant(checked[0], tf.int32),
                    guidance_scale=tf.constant(checked[1], tf.float32))

    def from_noise(self, x_T, noise, labels=None, guidance_scale=None):
        """(float32 images in the data range, uint8 images) [N, H, W, C] from x_T and noise."""
        x_T = np.asarray(x_T, np.float32)
        noise = np.asarray(noise, np.float32)
        want = [self.num_steps, x_T.shape[0] if x_T.ndim == 4 else "N", *self.image_shape]
        if x_T.ndim != 4 or list(x_T.shape[1:]) != self.image_shape:
            raise ValueError(f"x_T must be [N, {', '.join(map(str, self.image_shape))}], got "
                             f"{list(x_T.shape)}")
        if list(noise.shape) != want:
            raise ValueError(f"noise must be [K, N, H, W, C] = {want}, got {list(noise.shape)}")
        self._check_num_samples(x_T.shape[0])
        check_finite(x_T=x_T, noise=noise)
        out = self._signatures["from_noise"](x_T=tf.constant(x_T), noise=tf.constant(noise),
                                             **self._condition(x_T.shape[0], labels,
                                                               guidance_scale))
        return out["images"].numpy(), out["images_uint8"].numpy()

    def coefficients(self):
        """Every coefficient and "query_times", as the SavedModel computes them (float32)."""
        return {k: v.numpy() for k, v in self._signatures["coefficients"]().items()}

    def _check_num_samples(self, n):
        if isinstance(n, (bool, np.bool_)) or int(n) != n or not 1 <= n <= self.max_num_samples:
            raise ValueError(f"num_samples must be an integer in [1, {self.max_num_samples}] "
                             f"(the export's max_num_samples), got {n!r}")
        return int(n)


def _check_pair(seed):
    pair = np.asarray(seed)
    if pair.shape != (2,) or not np.issubdtype(pair.dtype, np.integer) \
            or np.any(pair < -2 ** 31) or np.any(pair >= 2 ** 31):
        raise ValueError(f"seed must be an integer or an int32 pair [hi, lo], got {seed!r}")
    return [int(v) for v in pair]
