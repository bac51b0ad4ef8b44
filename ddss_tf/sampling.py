"""Draw N samples in batches and write them: the library side of `ddss_sample`.

    source = sampling.from_export("workdir/export")                 # a SavedModel export
    source = sampling.from_coefficients("coefficients.json", "digits")
    source = sampling.from_family("ddim", "digits", num_steps=10, stride="quadratic")
    source = sampling.from_family("ddim", "eps.keras", schedule="cosine", num_steps=10)
    images, uint8 = sampling.draw(source, num_samples=64, seed=0, batch_size=256)
    sampling.write("samples.npz", images, uint8)                    # + samples.png beside it

Seeds: batch b (of `batch_size` samples, the last one shorter) draws
noise.draw(seed + b, K, [n_b, H, W, C]), the rule of `ddss_tf.noise` that a search's
evaluation follows too: `--seed=2000003 --batch_size=500` redraws its evaluation
samples (compare.png's rows are the first of them). The first batch is what the
export's serving_default returns for noise.seed_pair(seed). Every source runs the same
noise and uint8 ops, so one seed gives the same bytes whether the sampler is exported,
rebuilt from JSON or in memory (for the same batch_size).
"""

import errno
import os

import numpy as np
import tensorflow as tf

from ddss_tf import denoisers, files, images as images_lib, interrupt, models, noise, samplers
from ddss_tf.export import ops
from ddss_tf.export import coefficients as coefficients_lib
from ddss_tf.export import exported

__all__ = ["LayerSource", "from_export", "from_coefficients", "from_family", "draw",
           "write", "MAX_SEED", "memory_needed", "check_fits_in_memory", "check_output"]

MAX_SEED = noise.MAX_SEED
# What rerunning ddss_sample after a stop does (interrupt.phase's rerun).
RERUN = "nothing was written; rerun the same command (it draws the same samples)"


class LayerSource:
    """An in-memory sampler layer with the interface of `export.ExportedSampler`.

    conditional: for a conditional model, its `denoisers.ConditionalDenoiser` (the layer is
    built on its `unbound()`); from_noise then takes labels and a guidance scale, within
    `scale_range` (low, high) when given (a coefficients.json's: the range searched)."""

    max_num_samples = None

    def __init__(self, layer, image_shape=None, conditional=None, scale_range=None):
        network = getattr(layer.denoiser, "network", None)
        image_shape = image_shape or (models.image_shape(network) if network else None)
        if image_shape is None:
            raise ValueError("cannot tell the model's image shape [H, W, C]")
        self.layer, self.conditional, self.scale_range = layer, conditional, scale_range
        self.num_steps = layer.num_steps
        self.image_shape = list(image_shape)
        self.data_range = layer.denoiser.data_range

    def from_noise(self, x_T, noise, labels=None, guidance_scale=None):
        """(float32 images clipped to the data range, uint8 images), as the export computes them."""
        exported.check_finite(x_T=x_T, noise=noise)
        null = None if self.conditional is None else self.conditional.null_condition
        if null is not None and null.shape.rank != 0:  # conditioned on embeddings [N, D]
            if labels is None or guidance_scale is None:
                raise ValueError(exported.NEEDS_CONDITION)
            checked = labels, guidance_scale
        else:
            checked = exported.check_condition(labels, guidance_scale, int(np.shape(x_T)[0]),
                                               None if null is None else int(null),
                                               self.scale_range)
        if checked is None:
            out = self.layer(x_T, noise)
        else:
            with self.layer.using_denoiser(self.conditional.guided(*checked)):
                out = self.layer(x_T, noise)
        x0 = ops.clip_to_range(tf.cast(out, tf.float32), self.data_range)
        return x0.numpy(), ops.to_uint8(x0, self.data_range).numpy()


def from_export(path):
    """An exported SavedModel (base directory: latest version; or a version directory)."""
    return exported.load_sampler(path)


def from_coefficients(path, model="digits", prediction=None, **options):
    """The sampler of a coefficients.json rebuilt on `model` (checked to be its model).

    model, options: as `models.load` (a ModelSpec's fields). A model that carries no
    schedule runs on the file's when `schedule` is empty; prediction None: the file's.
    """
    doc = coefficients_lib.read_coefficients(path)
    m = doc["model"]
    if not options.get("schedule") and not models.carries_schedule(
            model, options.get("model_preset", "")):
        options["schedule"] = doc["schedule"]
    prediction = prediction or m.get("prediction", "eps")
    net, sched = models.load(model, prediction=prediction, **options)
    den = denoisers.from_keras_model(net, sched, prediction=prediction,
                                     clip_x0=m.get("clip_x0", False),
                                     data_range=m.get("data_range", (-1.0, 1.0)))
    cond = den if isinstance(den, denoisers.ConditionalDenoiser) else None
    layer = coefficients_lib.load_coefficients(path, cond.unbound() if cond else den, remat=False)
    scale_range = doc.get("guidance", {}).get("scale_range") if cond else None
    return LayerSource(layer, conditional=cond, scale_range=scale_range)


def from_family(family, model="digits", num_steps=10, **options):
    """A sampler family by name on `model`, untrained. options: the ModelSpec's other fields
    (as `models.load` takes them) and the family's options (`samplers.create`'s)."""
    spec = {k: options.pop(k) for k in models.OPTIONS if k in options}
    den, _ = models.load_denoiser(model, **spec)
    cond = den if isinstance(den, denoisers.ConditionalDenoiser) else None
    layer = samplers.create(family, cond.unbound() if cond else den, num_steps=num_steps,
                            remat=False, **options)
    return LayerSource(layer, conditional=cond)


def draw(source, num_samples, seed=0, batch_size=256, progress=None, labels=None,
         guidance_scale=None):
    """(float32 images [N, H, W, C] in the data range, uint8 images) from `source`.

    progress: an optional `progress.Progress` updated with the samples done. labels,
    guidance_scale: for a conditional model's sampler; sample i asks for
    labels[i mod len(labels)].
    """
    _check_int("num_samples", num_samples, 1)
    _check_int("batch_size", batch_size, 1)
    num_batches = -(-num_samples // batch_size)
    _check_int("seed", seed, 0, MAX_SEED - (num_batches - 1))  # batch b draws seed + b
    limit = source.max_num_samples
    if limit is not None and batch_size > limit:
        raise ValueError(f"batch_size {batch_size} exceeds the export's max_num_samples {limit}; "
                         f"use --batch_size={limit} or less")
    requested = None if labels is None else np.resize(np.asarray(labels, np.int32), num_samples)
    with interrupt.phase("sampling", rerun=RERUN):
        return _draw(source, num_samples, seed, batch_size, progress, requested, guidance_scale)


def _draw(source, num_samples, seed, batch_size, progress, requested, guidance_scale):
    floats, uint8s = [], []
    for b, start in enumerate(range(0, num_samples, batch_size)):
        n = min(batch_size, num_samples - start)
        x_T, z = noise.draw_batch(seed, b, source.num_steps, [n, *source.image_shape])
        condition = {} if requested is None and guidance_scale is None else dict(
            labels=None if requested is None else requested[start:start + n],
            guidance_scale=guidance_scale)
        f, u = source.from_noise(x_T, z, **condition)
        f = np.asarray(f, np.float32)
        if not np.all(np.isfinite(f)):
            raise FloatingPointError(
                f"the sampler returned non-finite values in batch {b} (samples {start}.."
                f"{start + n - 1}): the model or the sampler's coefficients produce NaN / Inf; "
                "nothing written")
        floats.append(f)
        uint8s.append(np.asarray(u, np.uint8))
        if progress is not None:
            progress.update(start + n)
    return np.concatenate(floats), np.concatenate(uint8s)


def memory_needed(num_samples, image_shape):
    """Peak bytes of `draw` + `write` for num_samples images: the float32 and uint8 batches
    and their concatenations, the .npz's in-memory copy, and the PNG grid (upscaled)."""
    h, w, c = (int(s) for s in image_shape)
    scale = _grid_scale(h, w)
    per_image = h * w * c * (4 + 1) * 2 + h * w * c * 4 + (h * scale + 1) * (w * scale + 1) * c
    return int(num_samples) * per_image


def _grid_scale(h, w):
    return max(1, 32 // max(h, w))


def check_fits_in_memory(num_samples, image_shape, fraction=0.5):
    """ValueError when num_samples images would take more than `fraction` of this machine's
    memory (draw holds them all before writing one .npz)."""
    need = memory_needed(num_samples, image_shape)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > fraction * total:
        fit = int(fraction * total // memory_needed(1, image_shape))
        raise ValueError(f"num_samples {num_samples} of {list(image_shape)} images need "
                         f"{need / 2**30:.1f} GiB in memory, over half of this machine's "
                         f"{total / 2**30:.1f} GiB; draw at most {fit} per call (several calls "
                         "with different --seed give independent samples)")


def check_output(out):
    """Check `out` (a .npz path) can be written, before any sampling: its directory exists or
    can be made and is writable, and `out` is not a directory."""
    if not str(out).endswith(".npz"):
        raise ValueError(f"--out must name a .npz file, got {out!r}")
    if os.path.isdir(out):
        raise IsADirectoryError(errno.EISDIR, "--out is a directory, not a .npz file", out)
    files.writable_dir(os.path.dirname(os.path.abspath(out)), "the directory of --out")


def write(out, images, uint8, ncols=None):
    """Write images (float32, NHWC) to the .npz `out` and a PNG grid of `uint8` beside it.

    Both files are written atomically, and the .npz is removed again when the PNG cannot be
    written (both or neither). Returns (npz path, png path).
    """
    if not out.endswith(".npz"):
        raise ValueError(f"--out must name a .npz file, got {out!r}")
    png = out[:-len(".npz")] + ".png"
    h, w = uint8.shape[1:3]
    grid = images_lib.make_grid(uint8, ncols=ncols, scale=_grid_scale(h, w))
    with interrupt.phase("writing the samples", rerun=RERUN):
        files.write_bytes(out, files.npz_bytes({"images": np.asarray(images, np.float32)}))
        try:
            files.write_bytes(png, tf.io.encode_png(grid).numpy())
        except BaseException:  # a full disk, a signal: both files or neither
            os.remove(out)
            raise
    return out, png


def _check_int(name, value, low, high=None):
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
