"""Samples of a sampler layer on the evaluation seeds: the same x_T for every sampler and K.

A class-conditional model's samples (`guidance`, a guidance.Guidance) are drawn for the
labels `labels(num_samples, num_classes)`: 0, 1, ..., C - 1, 0, 1, ... (every class as often,
within one), each batch under `guidance.bound`.
"""

import contextlib

import numpy as np

from ddss_tf import noise
from ddss_tf import progress as progress_lib
from ddss_tf.noise import EVAL_SEED

__all__ = ["sample", "grid_images", "labels", "EVAL_SEED", "BATCH_SIZE"]

# Samples per evaluation batch; batch b draws noise.draw_batch(EVAL_SEED, b, ...).
BATCH_SIZE = 500


def labels(num_samples, num_classes):
    """The requested labels of an evaluation's samples: sample i asks for i mod num_classes."""
    return (np.arange(num_samples) % int(num_classes)).astype(np.int32)


def _bound(layer, guidance, requested):
    return contextlib.nullcontext() if guidance is None else guidance.bound(layer, requested)


def sample(layer, num_samples, image_shape, seed=EVAL_SEED, batch_size=BATCH_SIZE,
           show_progress=False, desc="sample", guidance=None):
    """num_samples images from a sampler layer, in batches of min(batch_size, num_samples);
    batch b draws its x_T and noise with noise.draw_batch(seed, b) (the rule `ddss_sample`
    follows too).

    The chain runs eagerly: each network call is already a compiled tf.function, so an
    outer function would only add a trace (seconds at K = 10, minutes at K = 1000) per
    sampler and batch shape. Returns float32 numpy [num_samples, H, W, C]. With `guidance`
    sample i shows label `labels(...)[i]`.
    """
    batch_size = min(batch_size, num_samples)
    out, num_batches = [], -(-num_samples // batch_size)
    bar = progress_lib.Progress(num_batches, desc=desc) if show_progress else None
    requested = None if guidance is None else labels(num_batches * batch_size,
                                                      guidance.num_classes)
    for b in range(num_batches):
        x_T, z = noise.draw_batch(seed, b, layer.num_steps, [batch_size] + list(image_shape))
        batch = None if requested is None else requested[b * batch_size:(b + 1) * batch_size]
        with _bound(layer, guidance, batch):
            out.append(layer(x_T, z).numpy())
        if bar:
            bar.update(b + 1)
    if bar:
        bar.close()
    return np.concatenate(out)[:num_samples]


def grid_images(layer, image_shape, num_samples, count, seed=EVAL_SEED, batch_size=BATCH_SIZE,
                guidance=None):
    """The first `count` images of `sample(layer, num_samples, image_shape, seed, batch_size)`,
    computed alone: the first batch's x_T and noise, cut to `count` (each sample depends only
    on its own x_T and noise)."""
    batch = min(batch_size, num_samples)
    x_T, z = noise.draw_batch(seed, 0, layer.num_steps, [batch] + list(image_shape))
    n = min(count, batch)
    requested = None if guidance is None else labels(n, guidance.num_classes)
    with _bound(layer, guidance, requested):
        return layer(x_T[:n], z[:, :n]).numpy()
