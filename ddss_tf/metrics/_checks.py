"""Input checks shared by the metrics: one clear ValueError per kind of bad input.

The numpy checks run on evaluation inputs (features, logits, image sets). The
tensor check only looks at static shapes, so it is safe inside tf.function and
a distribution strategy; values of training tensors are never inspected there.
"""

import numpy as np

__all__ = ["features", "feature_pair", "images", "image_tensor_shape"]


def features(x, name="features", min_samples=2):
    """float64 numpy [N, d], N >= min_samples, every entry finite; ValueError otherwise."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array of shape [N, d]: {err}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape [N, d], got shape {arr.shape}")
    if arr.shape[0] < min_samples:
        raise ValueError(
            f"{name} needs at least {min_samples} samples, got {arr.shape[0]}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} has zero feature width")
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr).all(axis=1)))
        raise ValueError(f"{name} contains NaN or infinite values (in {bad} of {arr.shape[0]} rows)")
    return arr


def feature_pair(gen, real, min_samples=2):
    """Checked (gen, real) float64 arrays [n, d], [m, d] of the same width d."""
    gen = features(gen, "generated features", min_samples)
    real = features(real, "real features", min_samples)
    if gen.shape[1] != real.shape[1]:
        raise ValueError(
            f"feature widths differ: generated features are {gen.shape[1]}-d, "
            f"real features are {real.shape[1]}-d")
    return gen, real


def image_tensor_shape(shape, expected=None, channels=None, what="images"):
    """Static check of an image batch shape [B, H, W, C] (any B).

    expected: (H, W, C) with None entries meaning "any"; channels: allowed C values.
    """
    dims = list(shape) if shape is not None else None
    if dims is None or len(dims) != 4:
        raise ValueError(f"{what} must have shape [B, H, W, C], got {shape}")
    if expected is not None:
        for got, want in zip(dims[1:], expected):
            if want is not None and got is not None and int(got) != int(want):
                raise ValueError(
                    f"{what} must have shape [B, {', '.join(str(e) for e in expected)}], got {tuple(dims)}")
    if channels is not None and dims[3] is not None and int(dims[3]) not in channels:
        raise ValueError(
            f"{what} must have {' or '.join(str(c) for c in channels)} channels, got shape {tuple(dims)}")


def images(x, data_range, expected=None, channels=None, tolerance=1e-3):
    """float32 numpy [N, H, W, C], finite and inside data_range (+- tolerance * width)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"images must be a numeric array [N, H, W, C], got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    image_tensor_shape(arr.shape, expected, channels)
    if arr.shape[0] < 1:
        raise ValueError("images is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError("images contain NaN or infinite values")
    lo, hi = data_range
    slack = tolerance * (hi - lo)
    vmin, vmax = float(arr.min()), float(arr.max())
    if vmin < lo - slack or vmax > hi + slack:
        raise ValueError(
            f"images must lie in the data range [{lo}, {hi}], got values in [{vmin:.4g}, {vmax:.4g}] "
            f"(rescale them, or clip samples with clip=True)")
    return arr
