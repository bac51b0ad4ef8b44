"""Ho et al.'s TF1 checkpoints (the original `diffusion_tf` code) as the project's Keras UNet.

    net = diffusion_tf.load("diffusion_cifar10_model/model.ckpt-790000", image_size=32)
    arch = diffusion_tf.infer_architecture(diffusion_tf.read("diffusion_cifar10_model"))

Ho et al. (2020) released their CIFAR-10, LSUN and CelebA-HQ DDPMs as TF1 checkpoints of
github.com/hojonathanho/diffusion (`diffusion_tf/models/unet.py`): variables such as
`model/down_0/block_0/conv1/W`, each with an `.../ExponentialMovingAverage` shadow, the
weights their evaluation uses. `load` reads the checkpoint with TensorFlow's checkpoint
reader (no TF1 graph is built), infers the architecture from the variable names and shapes
(`Architecture`: ch, ch_mult, num_res_blocks, the levels with attention, conv or pooling
resampling, 1x1 or 3x3 shortcuts, in / out channels), checks that the checkpoint holds
exactly the variables of that architecture with their shapes, and copies the EMA shadows
(default) or the raw weights into `unet.build_unet`'s model, which then computes the
original network: (x_t [B, S, S, C], t [B] float, real-valued) -> [B, S, S, out_ch].

How the original maps onto the Keras UNet (checked against the original network's outputs
in tests/diffusion_tf_test.py):
  group norm        tf.contrib group_norm: 32 groups, epsilon 1e-6      -> norm_eps=1e-6
  nin (W [in, out]) a dense over channels                               -> 1x1 conv kernel
  attention q, k, v three nin layers                                    -> one qkv Dense, kernels
                                                                           concatenated [q | k | v]
  upsample          nearest resize with align_corners at exactly 2x     -> pixel repeat
  downsample        3x3 stride-2 conv, "SAME" (pad 0 before, 1 after)   -> Conv2D padding="same"
                    or 2x2 average pool (resamp_with_conv=False)
  temb              [sin, cos] of t * exp(-log(10000) i / (ch/2 - 1))   -> TimestepEmbedding
The image size is not in a checkpoint. Attention sits where the original's
`attn_resolutions` put it, which the checkpoint records per level (`down_i/attn_j`), so
`image_size` only sets the input shape (any multiple of 2^(levels - 1)).

`PRESETS` holds the released models' image size and schedule (Ho et al. 2020, Appendix B,
and the scripts/run_*.py of the original code), with their architectures as a check.
"""

import dataclasses
import glob
import os
import re

import numpy as np
import tensorflow as tf

from ddss_tf.nets import unet

__all__ = ["Architecture", "PRESETS", "preset_names", "is_checkpoint", "resolve", "read",
           "infer_architecture", "expected_variables", "keras_config", "load"]

EMA = "ExponentialMovingAverage"
_LEAVES = ("W", "b", "gamma", "beta")  # every weight of diffusion_tf's layers ends in one of these
_NORM_GROUPS = 32                      # tf.contrib.layers.group_norm's default, as the model calls it
_NORM_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What `unet.model(...)` of diffusion_tf was called with, as far as the weights tell."""

    ch: int
    ch_mult: tuple
    num_res_blocks: int
    attn_levels: tuple       # indices into ch_mult of the resolutions with self-attention
    resamp_with_conv: bool
    conv_shortcut: bool
    in_ch: int
    out_ch: int
    scope: str = "model"

    def describe(self):
        return (f"ch={self.ch}, ch_mult={self.ch_mult}, num_res_blocks={self.num_res_blocks}, "
                f"attention at levels {self.attn_levels}, resamp_with_conv={self.resamp_with_conv}, "
                f"{'conv' if self.conv_shortcut else 'nin'} shortcuts, {self.in_ch} -> {self.out_ch} "
                "channels")


def _linear(num_timesteps=1000):
    return {"kind": "linear_beta", "num_timesteps": num_timesteps, "beta_start": 1e-4,
            "beta_end": 0.02}


_CIFAR10 = Architecture(128, (1, 2, 2, 2), 2, (1,), True, False, 3, 3)          # unet2d16b2, 35.7M
_256 = Architecture(128, (1, 1, 2, 2, 4, 4), 2, (4,), True, False, 3, 3)  # unet2d16b2c112244, 114M

# name -> (image_size, schedule config, prediction, architecture). Every released model predicts
# eps with T = 1000 linear betas 1e-4 .. 0.02; attention at 16x16 (level 1 at 32, level 4 at 256).
PRESETS = {
    "cifar10": (32, _linear(), "eps", _CIFAR10),
    "celeba_hq": (256, _linear(), "eps", _256),
    "lsun_bedroom": (256, _linear(), "eps", _256),
    "lsun_cat": (256, _linear(), "eps", _256),
    "lsun_church": (256, _linear(), "eps", _256),
}


def preset_names():
    return tuple(PRESETS)


# ---- the checkpoint ------------------------------------------------------------------------------

def _strip(path):
    """A checkpoint prefix from a prefix or from one of its .index / .data-* files."""
    return re.sub(r"\.(index|data-\d+-of-\d+)$", "", str(path))


def is_checkpoint(path):
    """True for a TF checkpoint prefix (or one of its files), or a directory holding a
    `checkpoint` file or checkpoint .index files."""
    path = str(path)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, "checkpoint")) or bool(_indexed(path))
    return os.path.isfile(_strip(path) + ".index")


def _indexed(directory):
    """Checkpoint prefixes in a directory, by their .index files, highest step last."""
    def step(prefix):
        digits = re.search(r"(\d+)$", prefix)
        return (int(digits.group(1)) if digits else -1, prefix)

    return sorted((p[:-len(".index")] for p in glob.glob(os.path.join(directory, "*.index"))),
                  key=step)


def resolve(path):
    """The checkpoint prefix `path` names: itself, or a directory's latest checkpoint (as its
    `checkpoint` file names it, also when that file holds the absolute path of the machine it
    was written on, e.g. a gs:// bucket; without the file, the highest step's)."""
    path = str(path)
    if os.path.isdir(path):
        state = None
        if os.path.isfile(os.path.join(path, "checkpoint")):
            try:
                state = tf.train.get_checkpoint_state(path)
            except (tf.errors.OpError, ValueError, UnicodeDecodeError):
                state = None
        named = state.model_checkpoint_path if state and state.model_checkpoint_path else None
        candidates = [named, os.path.join(path, os.path.basename(named))] if named else []
        candidates += _indexed(path)[-1:] if not named else []
        for prefix in candidates:
            if os.path.isfile(prefix + ".index"):
                return prefix
        found = ", ".join(os.path.basename(p) for p in _indexed(path)) or "none"
        raise ValueError(f"no checkpoint to read in {path}: its `checkpoint` file names "
                         f"{named or 'nothing readable'}, and no such .index file is there "
                         f"(checkpoints there: {found})")
    prefix = _strip(path)
    if not os.path.isfile(prefix + ".index"):
        raise ValueError(f"no TF checkpoint at {path}: expected a prefix such as "
                         ".../model.ckpt-790000 (with its .index file) or a directory holding a "
                         "`checkpoint` file")
    return prefix


def read(path):
    """(checkpoint prefix, tf.train.CheckpointReader) for `resolve(path)`; ValueError if unreadable."""
    prefix = resolve(path)
    try:
        return prefix, tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise ValueError(f"cannot read the checkpoint {prefix} ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]})") from e


class _Variables:
    """A checkpoint's variables under the UNet's scope: raw weights, EMA shadows, shapes."""

    def __init__(self, prefix, shapes):
        self.prefix = prefix
        bases = {n.removesuffix(f"/{EMA}") for n in shapes}
        scopes = sorted({n[:-len("/conv_in/W")] for n in bases if n.endswith("/conv_in/W")})
        if not scopes:
            sample = ", ".join(sorted(shapes)[:4]) or "none"
            raise ValueError(f"{prefix} is not a checkpoint of diffusion_tf's UNet (Ho et al.'s "
                             f"original code): it has no <scope>/conv_in/W variable among its "
                             f"{len(shapes)} (e.g. {sample})")
        self.scope = "model" if "model" in scopes else scopes[0]
        if len(scopes) > 1 and "model" not in scopes:
            raise ValueError(f"{prefix} holds several UNets ({', '.join(scopes)}); diffusion_tf "
                             "checkpoints hold one, under 'model'")
        self.raw, self.ema = {}, {}
        for name, shape in shapes.items():
            if not name.startswith(self.scope + "/"):
                continue  # global_step, optimizer accumulators outside the model
            parts = name[len(self.scope) + 1:].split("/")
            leaf = next((i for i, p in enumerate(parts) if i and p in _LEAVES), None)
            rest = [] if leaf is None else parts[leaf + 1:]
            base = "/".join(parts if leaf is None else parts[:leaf + 1])
            if not rest:
                self.raw[base] = tuple(shape)
            elif rest == [EMA]:
                self.ema[base] = tuple(shape)
            # else: an optimizer slot of a weight (.../W/Adam, .../W/Momentum): not the model's
        self.structure = self.raw or self.ema  # names (below the scope) and shapes

    def shape(self, name):
        return self.structure.get(name)


def _level_indices(names, pattern):
    return sorted({int(m.group(1)) for n in names for m in [re.match(pattern, n)] if m})


def infer_architecture(path_or_reader):
    """The `Architecture` a checkpoint's variable names and shapes give.

    Accepts a path (as `read`) or a (prefix, reader) pair. Raises ValueError naming what
    is missing when the checkpoint is not diffusion_tf's UNet; the architecture's full
    variable list is checked against the checkpoint by `load`.
    """
    return _infer(_variables(path_or_reader))


def _variables(path_or_reader):
    prefix, reader = path_or_reader if isinstance(path_or_reader, tuple) else read(path_or_reader)
    return _Variables(prefix, reader.get_variable_to_shape_map())


def _infer(v):
    def need(name, rank):
        shape = v.shape(name)
        if shape is None or len(shape) != rank:
            got = "missing" if shape is None else f"shape {list(shape)}"
            raise ValueError(f"{v.prefix}: cannot infer diffusion_tf's UNet architecture: "
                             f"{v.scope}/{name} is {got}, expected a rank-{rank} weight")
        return shape

    conv_in = need("conv_in/W", 4)
    ch, in_ch = conv_in[3], conv_in[2]
    names = list(v.structure)
    levels = _level_indices(names, r"down_(\d+)/")
    blocks = _level_indices(names, r"down_0/block_(\d+)/")
    for what, found in (("down_<i>", levels), ("down_0/block_<j>", blocks)):
        if not found or found != list(range(len(found))):
            raise ValueError(f"{v.prefix}: cannot infer diffusion_tf's UNet architecture: the "
                             f"scopes {v.scope}/{what} are {found or 'missing'}, expected 0, 1, ...")
    mult = []
    for level in levels:
        width = need(f"down_{level}/block_0/conv1/W", 4)[3]
        if width % ch:
            raise ValueError(f"{v.prefix}: {v.scope}/down_{level}/block_0/conv1/W has {width} "
                             f"output channels, not a multiple of ch = {ch}")
        mult.append(width // ch)
    out = v.shape("conv_out/W")
    return Architecture(
        ch=ch, ch_mult=tuple(mult), num_res_blocks=len(blocks),
        attn_levels=tuple(i for i in levels if any(n.startswith(f"down_{i}/attn_") for n in names)),
        resamp_with_conv=len(levels) == 1 or "down_0/downsample/conv/W" in v.structure,
        conv_shortcut=any("/conv_shortcut/" in n for n in names),
        in_ch=in_ch, out_ch=out[-1] if out else in_ch, scope=v.scope)


# ---- the architecture's layers, in the original's creation order --------------------------------
# Each entry: (diffusion_tf scope below the model scope, kind, (keras layer name, attribute, part),
# (in, out)). kind: conv (W [3, 3, in, out]), nin / dense (W [in, out]), norm (gamma, beta [C]).
# part i of n: the weight fills slice i of n along the Keras weight's last axis (q, k, v -> qkv).

def _resblock(scope, name, c_in, c_out, arch):
    yield f"{scope}/norm1", "norm", (name, "norm1", None), (c_in, c_in)
    yield f"{scope}/conv1", "conv", (name, "conv1", None), (c_in, c_out)
    yield f"{scope}/temb_proj", "dense", (name, "temb_proj", None), (4 * arch.ch, c_out)
    yield f"{scope}/norm2", "norm", (name, "norm2", None), (c_out, c_out)
    yield f"{scope}/conv2", "conv", (name, "conv2", None), (c_out, c_out)
    if c_in != c_out:
        kind = "conv" if arch.conv_shortcut else "nin"
        yield f"{scope}/{kind}_shortcut", kind, (name, "skip", None), (c_in, c_out)


def _attn(scope, name, c):
    yield f"{scope}/norm", "norm", (name, "norm", None), (c, c)
    for i, part in enumerate("qkv"):
        yield f"{scope}/{part}", "nin", (name, "qkv", (i, 3)), (c, c)
    yield f"{scope}/proj_out", "nin", (name, "proj", None), (c, c)


def _layers(arch):
    ch, last = arch.ch, len(arch.ch_mult) - 1
    yield "temb/dense0", "dense", ("temb_dense0", None, None), (ch, 4 * ch)
    yield "temb/dense1", "dense", ("temb_dense1", None, None), (4 * ch, 4 * ch)
    yield "conv_in", "conv", ("conv_in", None, None), (arch.in_ch, ch)
    widths, c = [ch], ch
    for level, m in enumerate(arch.ch_mult):
        for j in range(arch.num_res_blocks):
            yield from _resblock(f"down_{level}/block_{j}", f"down{level}_res{j}", c, ch * m, arch)
            c = ch * m
            if level in arch.attn_levels:
                yield from _attn(f"down_{level}/attn_{j}", f"down{level}_attn{j}", c)
            widths.append(c)
        if level != last:
            if arch.resamp_with_conv:
                yield f"down_{level}/downsample/conv", "conv", (f"down{level}_ds", None, None), (c, c)
            widths.append(c)
    yield from _resblock("mid/block_1", "mid_res0", c, c, arch)
    yield from _attn("mid/attn_1", "mid_attn", c)
    yield from _resblock("mid/block_2", "mid_res1", c, c, arch)
    for level, m in reversed(list(enumerate(arch.ch_mult))):
        for j in range(arch.num_res_blocks + 1):
            c_in = c + widths.pop()
            yield from _resblock(f"up_{level}/block_{j}", f"up{level}_res{j}", c_in, ch * m, arch)
            c = ch * m
            if level in arch.attn_levels:
                yield from _attn(f"up_{level}/attn_{j}", f"up{level}_attn{j}", c)
        if level != 0 and arch.resamp_with_conv:
            yield f"up_{level}/upsample/conv", "conv", (f"up{level}_us_conv", None, None), (c, c)
    yield "norm_out", "norm", ("norm_out", None, None), (c, c)
    yield "conv_out", "conv", ("conv_out", None, None), (c, arch.out_ch)


def _leaves(kind, c_in, c_out):
    """{leaf: shape} of one layer of the original code."""
    if kind == "norm":
        return {"beta": (c_in,), "gamma": (c_in,)}
    w = (3, 3, c_in, c_out) if kind == "conv" else (c_in, c_out)
    return {"W": w, "b": (c_out,)}


def expected_variables(arch):
    """{name: shape} of every weight of `arch` (without EMA shadows), as the original names them."""
    return {f"{arch.scope}/{scope}/{leaf}": shape
            for scope, kind, _, io in _layers(arch) for leaf, shape in _leaves(kind, *io).items()}


def _check(v, arch, ema):
    """ValueError naming the first missing, misshapen or extra variable of `arch` in `v`."""
    where = f"{v.prefix} (diffusion_tf UNet with {arch.describe()})"
    expected = {n[len(arch.scope) + 1:]: s for n, s in expected_variables(arch).items()}
    for name, shape in expected.items():
        got = v.structure.get(name)
        if got is None:
            raise ValueError(f"{where}: variable {arch.scope}/{name} is missing, expected shape "
                             f"{list(shape)}")
        if got != shape:
            raise ValueError(f"{where}: variable {arch.scope}/{name} has shape {list(got)}, "
                             f"expected {list(shape)}")
    extra = sorted(set(v.structure) - set(expected))
    if extra:
        raise ValueError(f"{where}: unexpected variable {arch.scope}/{extra[0]} "
                         f"{list(v.structure[extra[0]])} ({len(extra)} in all); the architecture "
                         "inferred from the others has no such weight")
    source, kind = (v.ema, "EMA shadow") if ema and v.ema else (v.raw, "raw weight")
    for name, shape in expected.items():
        if source.get(name) != shape:
            suffix = f"/{EMA}" if source is v.ema else ""
            got = source.get(name)
            raise ValueError(f"{where}: the {kind} {arch.scope}/{name}{suffix} is "
                             f"{'missing' if got is None else f'of shape {list(got)}'}, "
                             f"expected {list(shape)}" +
                             (" (pass ema=False / --noema for the raw weights)"
                              if source is v.ema else ""))
    return source is v.ema


# ---- the Keras model ----------------------------------------------------------------------------

def keras_config(arch, image_size):
    """`unet.build_unet` config of `arch` at image_size x image_size."""
    levels = len(arch.ch_mult)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) \
            or image_size < 1 or image_size % 2 ** (levels - 1):
        raise ValueError(f"image_size must be a positive multiple of 2^{levels - 1} = "
                         f"{2 ** (levels - 1)} (the checkpoint's UNet has {levels} resolutions), "
                         f"got {image_size!r}")
    return dict(image_shape=(int(image_size), int(image_size), arch.in_ch), ch=arch.ch,
                ch_mult=arch.ch_mult, num_res_blocks=arch.num_res_blocks,
                attn_resolutions=tuple(image_size // 2 ** i for i in arch.attn_levels),
                dropout=0.0, norm_groups=_NORM_GROUPS, norm_eps=_NORM_EPS,
                resamp_with_conv=arch.resamp_with_conv, conv_shortcut=arch.conv_shortcut,
                out_channels=arch.out_ch)


def _keras_weights(layer, kind):
    """The Keras variables one original layer maps to, in `_leaves` order."""
    if kind == "norm":
        return {"beta": layer.beta, "gamma": layer.gamma}
    return {"W": layer.kernel, "b": layer.bias}


def load(path, image_size, ema=True, name=None):
    """keras.Model [x_t [B, S, S, C], t [B]] -> [B, S, S, out_ch] computing the checkpoint's UNet.

    Args:
      path: a checkpoint prefix (.../model.ckpt-790000) or a directory holding a
        `checkpoint` file (its latest checkpoint).
      image_size: S (the checkpoint does not record it).
      ema: use the EMA shadows (the weights Ho et al. evaluate with) when the checkpoint
        has them; False: the raw weights.
      name: the Keras model's name (default: the checkpoint's file name).
    Raises:
      ValueError: one line naming the first variable that does not fit, or saying that the
        checkpoint is not diffusion_tf's UNet.
    """
    prefix, reader = read(path)
    v = _Variables(prefix, reader.get_variable_to_shape_map())
    arch = _infer(v)
    config = keras_config(arch, image_size)
    use_ema = _check(v, arch, ema)
    if ema and not use_ema:
        from absl import logging
        logging.warning("%s has no EMA shadows: using its raw weights", prefix)
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(prefix))
    net = unet.build_unet(config, name=name)
    suffix = f"/{EMA}" if use_ema else ""
    for scope, kind, (layer_name, attr, part), _ in _layers(arch):
        layer = net.get_layer(layer_name)
        layer = getattr(layer, attr) if attr else layer
        for leaf, var in _keras_weights(layer, kind).items():
            value = reader.get_tensor(f"{arch.scope}/{scope}/{leaf}{suffix}").astype(np.float32)
            if part is None:
                var.assign(value.reshape(var.shape))
            else:  # one of q, k, v: its columns of the fused qkv weight
                i, n = part
                full = np.array(var.numpy())
                width = full.shape[-1] // n
                full[..., i * width:(i + 1) * width] = value
                var.assign(full)
    net.trainable = False
    return net
