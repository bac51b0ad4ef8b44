"""Image grids and PNG files (written with tf.io.encode_png: no imaging dependency)."""

import numpy as np
import tensorflow as tf

from ddss_tf import files

__all__ = ["to_uint8", "make_grid", "write_png", "labelled_rows", "render_text"]


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


# A 5 x 7 bitmap font (the HD44780's glyphs): 7 rows of 5 bits, most significant bit on the
# left. Enough for sampler names; text is drawn in capitals and unknown characters as "?".
_FONT = {
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14),
    "2": (14, 17, 1, 2, 4, 8, 31), "3": (31, 2, 4, 2, 1, 17, 14),
    "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8),
    "8": (14, 17, 17, 14, 17, 17, 14), "9": (14, 17, 17, 15, 1, 2, 12),
    "A": (14, 17, 17, 17, 31, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14), "D": (28, 18, 17, 17, 17, 18, 28),
    "E": (31, 16, 16, 30, 16, 16, 31), "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14), "J": (7, 2, 2, 2, 2, 18, 12),
    "K": (17, 18, 20, 24, 20, 18, 17), "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14), "P": (30, 17, 17, 30, 16, 16, 16),
    "Q": (14, 17, 17, 17, 21, 18, 13), "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14), "V": (17, 17, 17, 17, 17, 10, 4),
    "W": (17, 17, 17, 21, 21, 21, 10), "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 17, 10, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
    " ": (0,) * 7, "+": (0, 4, 4, 31, 4, 4, 0), "-": (0, 0, 0, 31, 0, 0, 0),
    "(": (2, 4, 8, 8, 8, 4, 2), ")": (8, 4, 2, 2, 2, 4, 8), ".": (0, 0, 0, 0, 0, 12, 12),
    ",": (0, 0, 0, 0, 12, 4, 8), "=": (0, 0, 31, 0, 31, 0, 0), "/": (0, 1, 2, 4, 8, 16, 0),
    "_": (0, 0, 0, 0, 0, 0, 31), ":": (0, 12, 12, 0, 12, 12, 0), "?": (14, 17, 1, 2, 4, 0, 4),
}


def render_text(text, scale=1):
    """A bool mask [7 * scale, 6 * len(text) * scale] of `text` in the 5 x 7 font (one blank
    column after each glyph), True where ink is."""
    glyphs = [_FONT.get(ch, _FONT["?"]) for ch in str(text).upper()]
    mask = np.zeros((7, 6 * len(glyphs)), bool)
    for i, rows in enumerate(glyphs):
        for y, bits in enumerate(rows):
            mask[y, 6 * i:6 * i + 5] = [(bits >> (4 - x)) & 1 for x in range(5)]
    return mask.repeat(scale, axis=0).repeat(scale, axis=1)


def _label_column(labels, heights, channels, text_scale, margin=4):
    """One white uint8 column per band, its label written in black and centred vertically."""
    masks = [render_text(label, text_scale) for label in labels]
    width = max(m.shape[1] for m in masks) + 2 * margin
    columns = []
    for mask, h in zip(masks, heights):
        col = np.full((h, width, channels), 255, np.uint8)
        mh, mw = mask.shape[:2]
        if mh <= h:
            y = (h - mh) // 2
            col[y:y + mh, margin:margin + mw][mask] = 0
        columns.append(col)
    return columns


def labelled_rows(rows, ncols, pad=1, scale=4, gap=6, data_range=(-1.0, 1.0), labels=None,
                  text_scale=2):
    """Stack several image sets as horizontal bands separated by a gap (e.g. real | samples).

    labels: one name per band, written to its left (the 5 x 7 font, `text_scale` pixels per
    font pixel)."""
    bands = [make_grid(r[:ncols * max(1, len(r) // ncols)], ncols, pad, scale, data_range)
             for r in rows]
    if labels is not None:
        if len(labels) != len(bands):
            raise ValueError(f"{len(labels)} labels for {len(bands)} rows")
        columns = _label_column(labels, [b.shape[0] for b in bands], bands[0].shape[2],
                                text_scale)
        bands = [np.concatenate([c, b], axis=1) for c, b in zip(columns, bands)]
    width = max(b.shape[1] for b in bands)
    c = bands[0].shape[2]
    out = []
    for b in bands:
        b = np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0)), constant_values=255)
        out += [b, np.full((gap, width, c), 128, np.uint8)]
    return np.concatenate(out[:-1], axis=0)


def write_png(path, grid):
    """Write a uint8 [H, W, C] array as PNG (C = 1 or 3) atomically, creating the parent
    directory."""
    files.write_bytes(path, tf.io.encode_png(np.asarray(grid, np.uint8)).numpy())
