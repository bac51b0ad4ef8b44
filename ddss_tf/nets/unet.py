"""The diffusion UNet of Ho et al. (2020) in Keras 3.

(x_t [B, H, W, C], t [B] real-valued model time) -> prediction [B, H, W, C], or with
`num_classes` = N > 0 a class-conditional network (x_t, t, c [B] int labels) -> prediction: a
learned embedding of c (N + 1 rows; label N is "no label", the null class of classifier-free
guidance) added to the time embedding, as in Dhariwal & Nichol's class-conditional ADM.

Sinusoidal embedding of a real t (so learned, non-integer query times work),
residual blocks with group norm and dropout, optional self-attention at chosen
resolutions, a middle block, and skip connections. Sized by config, from the
bundled 8x8 digits model up to Ho et al.'s CIFAR-10 model
(`CIFAR10_CONFIG`: ch 128, mult 1,2,2,2, 2 res blocks, attention at 16x16).
The options `norm_eps`, `resamp_with_conv`, `conv_shortcut` and `out_channels`
cover every configuration of Ho et al.'s original code (`diffusion_tf`), whose
checkpoints `ddss_tf.nets.diffusion_tf` converts into this model. Every layer is
registered as Keras-serializable.
"""

import math

import keras
from keras import layers, ops

__all__ = ["build_unet", "DEFAULT_CONFIG", "CIFAR10_CONFIG", "DIGITS_CONFIG", "FULL_PRECISION"]

DEFAULT_CONFIG = dict(
    image_shape=(32, 32, 3),
    ch=128,
    ch_mult=(1, 2, 2, 2),
    num_res_blocks=2,
    attn_resolutions=(16,),
    dropout=0.1,
    norm_groups=32,
    # Keras' GroupNormalization default (the bundled digits model was trained with it);
    # Ho et al.'s code uses 1e-6.
    norm_eps=1e-3,
    resamp_with_conv=True,  # strided / post-upsampling 3x3 convs; False: 2x2 average pool, plain
    conv_shortcut=False,    # a 3x3 conv (not 1x1) where a residual block changes the width
    out_channels=None,      # None: the image's C; 2C for a learned-variance (eps, v) output
    num_classes=0,          # > 0: a third input, labels in [0, num_classes] (num_classes: none)
)
CIFAR10_CONFIG = dict(DEFAULT_CONFIG)
DIGITS_CONFIG = dict(
    image_shape=(8, 8, 1),
    ch=32,
    ch_mult=(1, 2),
    num_res_blocks=2,
    attn_resolutions=(4,),
    dropout=0.0,
    norm_groups=8,
)

_PKG = "ddss_tf"
# Layers whose precision matters beyond their cost: the time MLP (the network's resolution in t,
# which learned query times follow) and the output convolution. ddss_tf.precision keeps them
# float32 when the other convolutions and dense layers compute in bfloat16.
FULL_PRECISION = ("temb_dense0", "temb_dense1", "conv_out")


@keras.saving.register_keras_serializable(package=_PKG)
class TimestepEmbedding(layers.Layer):
    """Sinusoidal embedding of real-valued t [B] -> [B, dim] (Vaswani et al.; Ho et al.)."""

    def __init__(self, dim, max_period=10000.0, **kwargs):
        super().__init__(**kwargs)
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        self.dim = int(dim)
        self.max_period = float(max_period)

    def call(self, t):
        half = self.dim // 2
        # exp(i * -(log(max_period) / (half - 1))), rounded as Ho et al.'s code does (one float32
        # product per frequency), so converted checkpoints reproduce their outputs to the last bits.
        freqs = ops.exp(ops.arange(half, dtype="float32") * (-math.log(self.max_period) / (half - 1)))
        args = ops.cast(ops.reshape(t, (-1, 1)), "float32") * freqs[None, :]
        return ops.concatenate([ops.sin(args), ops.cos(args)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return dict(super().get_config(), dim=self.dim, max_period=self.max_period)


@keras.saving.register_keras_serializable(package=_PKG)
class Upsample2x(layers.Layer):
    """2x nearest-neighbour upsampling, as `UpSampling2D(2)`, from concatenations and a reshape
    to static sizes. Its gradient reads no shape computed in the forward pass, so it compiles
    inside an XLA while loop without rematerialisation; UpSampling2D's tf.repeat feeds its
    gradient the tile multiples it computed, which XLA cannot take from a loop's stack."""

    def call(self, x):
        _, h, w, c = x.shape
        x = ops.expand_dims(ops.expand_dims(x, 2), 4)        # [B, H, 1, W, 1, C]
        x = ops.concatenate([x, x], axis=2)
        x = ops.concatenate([x, x], axis=4)                  # [B, H, 2, W, 2, C]
        return ops.reshape(x, (-1, 2 * h, 2 * w, c))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, 2 * h, 2 * w, c)


@keras.saving.register_keras_serializable(package=_PKG)
class ResBlock(layers.Layer):
    """GroupNorm-swish-conv, + time embedding, GroupNorm-swish-dropout-conv, + skip.

    The skip is the identity, or where the width changes a 1x1 conv (a 3x3 one with
    conv_shortcut=True).
    """

    def __init__(self, out_ch, dropout=0.0, norm_groups=32, norm_eps=1e-3, conv_shortcut=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.out_ch, self.dropout_rate, self.norm_groups = int(out_ch), float(dropout), int(norm_groups)
        self.norm_eps, self.conv_shortcut = float(norm_eps), bool(conv_shortcut)

    def build(self, input_shapes):
        x_shape, _ = input_shapes
        in_ch = x_shape[-1]
        self.norm1 = _group_norm(in_ch, self.norm_groups, self.norm_eps, "norm1")
        self.conv1 = layers.Conv2D(self.out_ch, 3, padding="same", name="conv1")
        self.temb_proj = layers.Dense(self.out_ch, name="temb_proj")
        self.norm2 = _group_norm(self.out_ch, self.norm_groups, self.norm_eps, "norm2")
        self.drop = layers.Dropout(self.dropout_rate)
        # Ho et al. zero-initialise the last conv of each block so it starts as the identity.
        self.conv2 = layers.Conv2D(self.out_ch, 3, padding="same", kernel_initializer="zeros",
                                   name="conv2")
        self.skip = None
        if in_ch != self.out_ch:
            self.skip = layers.Conv2D(self.out_ch, 3 if self.conv_shortcut else 1, padding="same",
                                      name="skip")
        # Build the children here so that weights exist before a saved model is loaded.
        out_shape = tuple(x_shape[:-1]) + (self.out_ch,)
        for layer, shape in ((self.norm1, x_shape), (self.conv1, x_shape), (self.norm2, out_shape),
                             (self.conv2, out_shape), (self.skip, x_shape)):
            if layer is not None:
                layer.build(shape)
        self.temb_proj.build(input_shapes[1])

    def call(self, inputs, training=None):
        x, temb = inputs
        h = self.conv1(ops.silu(self.norm1(x)))
        h = h + ops.cast(self.temb_proj(ops.silu(temb)), h.dtype)[:, None, None, :]
        h = self.conv2(self.drop(ops.silu(self.norm2(h)), training=training))
        skip = self.skip(x) if self.skip is not None else x
        # Under mixed precision (ddss_tf.precision) the convolutions may compute in a narrower
        # dtype than the block: the residual stream keeps the block's (no-ops otherwise).
        return ops.cast(skip, self.compute_dtype) + ops.cast(h, self.compute_dtype)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0][:-1]) + (self.out_ch,)

    def get_config(self):
        return dict(super().get_config(), out_ch=self.out_ch, dropout=self.dropout_rate,
                    norm_groups=self.norm_groups, norm_eps=self.norm_eps,
                    conv_shortcut=self.conv_shortcut)


@keras.saving.register_keras_serializable(package=_PKG)
class AttnBlock(layers.Layer):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, norm_groups=32, norm_eps=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.norm_groups, self.norm_eps = int(norm_groups), float(norm_eps)

    def build(self, x_shape):
        ch = x_shape[-1]
        self.norm = _group_norm(ch, self.norm_groups, self.norm_eps, "norm")
        self.qkv = layers.Dense(3 * ch, name="qkv")
        self.proj = layers.Dense(ch, kernel_initializer="zeros", name="proj")
        self.norm.build(x_shape)
        self.qkv.build((None, None, ch))
        self.proj.build((None, None, ch))

    def call(self, x):
        shape = ops.shape(x)
        ch = x.shape[-1]
        h = ops.reshape(self.norm(x), (shape[0], -1, ch))
        q, k, v = ops.split(self.qkv(h), 3, axis=-1)
        logits = ops.einsum("bic,bjc->bij", q, k) / math.sqrt(ch)
        w = ops.softmax(ops.cast(logits, self.compute_dtype), axis=-1)  # the block's dtype
        h = self.proj(ops.einsum("bij,bjc->bic", ops.cast(w, v.dtype), v))
        return x + ops.reshape(ops.cast(h, x.dtype), shape)

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        return dict(super().get_config(), norm_groups=self.norm_groups, norm_eps=self.norm_eps)


def _groups(ch, norm_groups):
    """Largest group count <= norm_groups that divides ch."""
    g = min(norm_groups, ch)
    while ch % g:
        g -= 1
    return g


def _group_norm(ch, norm_groups, epsilon, name):
    return layers.GroupNormalization(_groups(ch, norm_groups), epsilon=epsilon, name=name)


def build_unet(config=None, name="unet"):
    """Functional Keras model [x_t, t] (or [x_t, t, c]) -> prediction; see module docstring
    for config keys."""
    cfg = dict(DEFAULT_CONFIG, **(config or {}))
    height, width, channels = cfg["image_shape"]
    ch, mult, groups = cfg["ch"], tuple(cfg["ch_mult"]), cfg["norm_groups"]
    if height % (2 ** (len(mult) - 1)) or width % (2 ** (len(mult) - 1)):
        raise ValueError(f"image size {height}x{width} must be divisible by 2^{len(mult) - 1}")
    eps, with_conv = cfg["norm_eps"], cfg["resamp_with_conv"]
    res_kw = dict(dropout=cfg["dropout"], norm_groups=groups, norm_eps=eps,
                  conv_shortcut=cfg["conv_shortcut"])

    x_in = keras.Input(shape=(height, width, channels), name="x_t")
    t_in = keras.Input(shape=(), name="t")
    temb = TimestepEmbedding(ch, name="temb")(t_in)
    temb = layers.Dense(4 * ch, activation="silu", name="temb_dense0")(temb)
    temb = layers.Dense(4 * ch, name="temb_dense1")(temb)
    inputs = [x_in, t_in]
    if cfg["num_classes"]:
        c_in = keras.Input(shape=(), dtype="int32", name="c")
        inputs.append(c_in)
        temb = temb + layers.Embedding(int(cfg["num_classes"]) + 1, 4 * ch, name="class_emb")(c_in)

    h = layers.Conv2D(ch, 3, padding="same", name="conv_in")(x_in)
    skips, res = [h], height
    for level, m in enumerate(mult):
        for i in range(cfg["num_res_blocks"]):
            h = ResBlock(ch * m, **res_kw, name=f"down{level}_res{i}")([h, temb])
            if res in cfg["attn_resolutions"]:
                h = AttnBlock(groups, eps, name=f"down{level}_attn{i}")(h)
            skips.append(h)
        if level != len(mult) - 1:
            if with_conv:
                h = layers.Conv2D(h.shape[-1], 3, strides=2, padding="same",
                                  name=f"down{level}_ds")(h)
            else:
                h = layers.AveragePooling2D(2, name=f"down{level}_ds")(h)
            res //= 2
            skips.append(h)

    h = ResBlock(h.shape[-1], **res_kw, name="mid_res0")([h, temb])
    h = AttnBlock(groups, eps, name="mid_attn")(h)
    h = ResBlock(h.shape[-1], **res_kw, name="mid_res1")([h, temb])

    for level, m in reversed(list(enumerate(mult))):
        for i in range(cfg["num_res_blocks"] + 1):
            h = layers.Concatenate(name=f"up{level}_cat{i}")([h, skips.pop()])
            h = ResBlock(ch * m, **res_kw, name=f"up{level}_res{i}")([h, temb])
            if res in cfg["attn_resolutions"]:
                h = AttnBlock(groups, eps, name=f"up{level}_attn{i}")(h)
        if level != 0:
            h = Upsample2x(name=f"up{level}_us")(h)
            if with_conv:
                h = layers.Conv2D(h.shape[-1], 3, padding="same", name=f"up{level}_us_conv")(h)
            res *= 2

    h = ops.silu(_group_norm(h.shape[-1], groups, eps, "norm_out")(h))
    out = layers.Conv2D(cfg["out_channels"] or channels, 3, padding="same",
                        kernel_initializer="zeros", name="conv_out")(h)
    return keras.Model(inputs, out, name=name)
