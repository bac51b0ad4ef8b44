"""A float64 NumPy forward pass of Ho et al.'s diffusion_tf UNet, written from the original code
(hojonathanho/diffusion, diffusion_tf/models/unet.py and nn.py), and checkpoint writers.

    out = unet_forward(params, x, t, ch=32, out_ch=3, ch_mult=(1, 2), num_res_blocks=1,
                       attn_resolutions=(8,), resamp_with_conv=True)

`params` maps the original variable names ("model/down_0/block_0/conv1/W", ...) to arrays.
The pass reads them through `Params`, which records every name it reads, so a test can
check that a converter's variable list is exactly what the original network uses. It
shares no code with ddss_tf: it is the second implementation the converter is checked
against (and is itself checked against the original network's outputs in the fixture).
"""

import math

import numpy as np
import tensorflow as tf


class Params:
    """Read-only name -> float64 array, recording the names read."""

    def __init__(self, values, scope="model"):
        self.values, self.scope, self.read = values, scope, set()

    def __call__(self, name):
        full = f"{self.scope}/{name}"
        self.read.add(full)
        return np.asarray(self.values[full], np.float64)


def _conv2d(p, name, x, stride=1):
    w, b = p(f"{name}/W"), p(f"{name}/b")
    k = w.shape[0]
    n, h, wd, _ = x.shape
    out_h, out_w = -(-h // stride), -(-wd // stride)          # TF "SAME"
    pad_h = max((out_h - 1) * stride + k - h, 0)
    pad_w = max((out_w - 1) * stride + k - wd, 0)
    xp = np.pad(x, [(0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                    (0, 0)])
    out = np.zeros([n, out_h, out_w, w.shape[-1]])
    for i in range(k):
        for j in range(k):
            patch = xp[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride, :]
            out += np.einsum("bhwc,co->bhwo", patch, w[i, j])
    return out + b


def _nin(p, name, x):
    return np.tensordot(x, p(f"{name}/W"), axes=1) + p(f"{name}/b")


def _group_norm(p, name, x, groups=32, eps=1e-6):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 2, 4), keepdims=True)
    g = (g - mean) / np.sqrt(var + eps)
    return g.reshape(n, h, w, c) * p(f"{name}/gamma") + p(f"{name}/beta")


def _swish(x):
    return x / (1.0 + np.exp(-x))


def _resnet_block(p, name, x, temb, out_ch, conv_shortcut):
    c = x.shape[-1]
    h = _conv2d(p, f"{name}/conv1", _swish(_group_norm(p, f"{name}/norm1", x)))
    h = h + _nin(p, f"{name}/temb_proj", _swish(temb))[:, None, None, :]
    h = _conv2d(p, f"{name}/conv2", _swish(_group_norm(p, f"{name}/norm2", h)))
    if c != out_ch:
        x = _conv2d(p, f"{name}/conv_shortcut", x) if conv_shortcut else \
            _nin(p, f"{name}/nin_shortcut", x)
    return x + h


def _attn_block(p, name, x):
    n, h, w, c = x.shape
    y = _group_norm(p, f"{name}/norm", x)
    q, k, v = (_nin(p, f"{name}/{s}", y).reshape(n, h * w, c) for s in "qkv")
    logits = np.einsum("bic,bjc->bij", q, k) * c ** -0.5
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bij,bjc->bic", weights, v).reshape(n, h, w, c)
    return x + _nin(p, f"{name}/proj_out", out)


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = np.exp(np.arange(half) * -(math.log(10000) / (half - 1)))
    args = np.asarray(t, np.float64)[:, None] * freqs[None, :]
    return np.concatenate([np.sin(args), np.cos(args)], axis=1)


def unet_forward(params, x, t, *, ch, out_ch, ch_mult, num_res_blocks, attn_resolutions,
                 resamp_with_conv=True, conv_shortcut=False):
    """The original `unet.model(x, t=t, ...)` (dropout 0) in float64; params: a `Params`."""
    p = params
    x = np.asarray(x, np.float64)
    temb = _nin(p, "temb/dense0", timestep_embedding(t, ch))
    temb = _nin(p, "temb/dense1", _swish(temb))
    hs = [_conv2d(p, "conv_in", x)]
    levels = len(ch_mult)
    for i in range(levels):
        for j in range(num_res_blocks):
            h = _resnet_block(p, f"down_{i}/block_{j}", hs[-1], temb, ch * ch_mult[i], conv_shortcut)
            if h.shape[1] in attn_resolutions:
                h = _attn_block(p, f"down_{i}/attn_{j}", h)
            hs.append(h)
        if i != levels - 1:
            h = hs[-1]
            if resamp_with_conv:
                hs.append(_conv2d(p, f"down_{i}/downsample/conv", h, stride=2))
            else:
                n, hh, ww, c = h.shape
                hs.append(h.reshape(n, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4)))
    h = hs[-1]
    h = _resnet_block(p, "mid/block_1", h, temb, h.shape[-1], conv_shortcut)
    h = _attn_block(p, "mid/attn_1", h)
    h = _resnet_block(p, "mid/block_2", h, temb, h.shape[-1], conv_shortcut)
    for i in reversed(range(levels)):
        for j in range(num_res_blocks + 1):
            h = _resnet_block(p, f"up_{i}/block_{j}", np.concatenate([h, hs.pop()], -1), temb,
                              ch * ch_mult[i], conv_shortcut)
            if h.shape[1] in attn_resolutions:
                h = _attn_block(p, f"up_{i}/attn_{j}", h)
        if i != 0:
            h = h.repeat(2, axis=1).repeat(2, axis=2)
            if resamp_with_conv:
                h = _conv2d(p, f"up_{i}/upsample/conv", h)
    assert not hs
    h = _swish(_group_norm(p, "norm_out", h))
    return _conv2d(p, "conv_out", h)


def read_checkpoint(prefix):
    """{name: array} of every variable in a TF checkpoint."""
    reader = tf.train.load_checkpoint(prefix)
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def write_checkpoint(prefix, values):
    """Write {name: array} as a TF (V2-format) checkpoint at `prefix`, names as given, with a
    `checkpoint` file beside it, as tf.compat.v1.train.Saver lays it out."""
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(values[n]) for n in names])
    directory, base = prefix.rsplit("/", 1)
    with open(f"{directory}/checkpoint", "w") as f:
        f.write(f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')
    return prefix
