"""Image grids and PNG files (written with tf.io.encode_png: no imaging dependency)."""

import os

import numpy as np
import tensorflow as tf

__all__ = ["to_uint8", "make_grid", "write_png", "labelled_rows"]


def to_uint8(images, data_range=(-1.0, 1.0)):
    """float images in data_range -> uint8 in [0, 255] (rounded, clipped)."""
    low, high = data_range
    x = (np.asarray(images, np.float64) - low) / (high - low)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def make_grid(images, ncols=None, pad=1, scale=1, data_range=(-1.0, 1.0), pad_value=255):
    """images [N, H, W, C] float in data_range (or uint8) -> one uint8 grid [H', W', C].

    scale: integer nearest-neighbour upscaling, so 8x8 digits stay visible.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
    if images.dtype != np.uint8:
        images = to_uint8(images, data_range)
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = images.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = images[i]
    return grid


def labelled_rows(rows, ncols, pad=1, scale=4, gap=6, data_range=(-1.0, 1.0)):
    """Stack several image sets as horizontal bands separated by a gap (e.g. real | samples)."""
    bands = [make_grid(r[:ncols * max(1, len(r) // ncols)], ncols, pad, scale, data_range)
             for r in rows]
    width = max(b.shape[1] for b in bands)
    c = bands[0].shape[2]
    out = []
    for b in bands:
        b = np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255)
        out += [b, np.full((gap, width, c), 128, np.uint8)]
    return np.concatenate(out[:-1], axis=0)


def write_png(path, grid):
    """Write a uint8 [H, W, C] array as PNG (C = 1 or 3), creating the parent directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_png(np.asarray(grid, np.uint8)))
