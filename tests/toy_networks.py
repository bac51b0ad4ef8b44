"""Small Keras eps-models [x_t [B, H, W, C], t [B]] -> eps for the tests (test helper).

Seeded where their weights matter, so a test that builds one twice gets the same network.
"""

import keras
import numpy as np


def conv_eps_model(channels=64, depth=3):
    """[x_t [B, 16, 16, 1], t [B]] -> eps: `depth` wide convolutions, t added between them; wide
    enough that activations dominate a search step's memory."""
    x_in = keras.Input((16, 16, 1))
    t_in = keras.Input(())
    emb = keras.layers.Dense(channels)(keras.layers.Reshape((1,))(t_in))
    h = x_in
    for _ in range(depth):
        h = keras.layers.Conv2D(channels, 3, padding="same", activation="swish")(h)
        h = h + keras.layers.Reshape((1, 1, channels))(emb)
    return keras.Model([x_in, t_in], keras.layers.Conv2D(1, 3, padding="same")(h))


def sinusoidal_eps_model(image_shape, channels=8, seed=0):
    """[x_t [B, *image_shape] (C = 1), t [B]] -> eps: a convolution, a sinusoidal time embedding
    (4 frequencies) through a dense layer added to it, and an output convolution."""
    keras.utils.set_random_seed(seed)
    x_in = keras.Input(tuple(image_shape), name="x_t")
    t_in = keras.Input((), name="t")
    freqs = np.exp(-np.log(1000.0) * np.arange(4) / 4).astype(np.float32)
    angles = keras.layers.Lambda(lambda t: t[:, None] * freqs)(t_in)
    emb = keras.layers.Concatenate()([keras.ops.sin(angles), keras.ops.cos(angles)])
    emb = keras.layers.Dense(channels, activation="swish")(emb)
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="swish")(x_in)
    h = h + keras.layers.Reshape((1, 1, channels))(emb)
    return keras.Model([x_in, t_in], keras.layers.Conv2D(1, 3, padding="same")(h))


def dense_time_eps_model(image_shape=(8, 8, 1), out_channels=1, t_shape=(), seed=3):
    """[x_t [B, *image_shape], t [B, *t_shape]] -> [B, H, W, out_channels]: a convolution with a
    dense time embedding added, and an output convolution (named "tiny_eps"). out_channels and
    t_shape other than C and () make models that break the eps contract on purpose."""
    keras.utils.set_random_seed(seed)
    x = keras.Input(tuple(image_shape), name="x_t")
    t = keras.Input(t_shape, name="t")
    emb = keras.layers.Dense(8, activation="silu")(keras.layers.Reshape((1,))(t))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="silu")(x)
    h = keras.layers.Add()([h, keras.layers.Reshape((1, 1, 8))(emb)])
    out = keras.layers.Conv2D(out_channels, 3, padding="same")(h)
    return keras.Model([x, t], out, name="tiny_eps")


def search_eps_model(image_shape=(8, 8, 1), seed=3):
    """[x_t, t] -> eps = x_t + 0.1 f(x_t, t), f a convolution with a dense time embedding and an
    output convolution (named "toy_eps"). An untrained network with eps far from x_t makes
    x0_hat = (x_t - sigma eps) / alpha explode at large t (every pixel of a chain's samples
    clipped to the same value); this one's samples stay near the scale of the data and
    depend on x_T, so searches and scores on it mean something, at a few ops per call."""
    keras.utils.set_random_seed(seed)
    x = keras.Input(tuple(image_shape), name="x_t")
    t = keras.Input((), name="t")
    emb = keras.layers.Dense(8, activation="silu")(keras.layers.Reshape((1,))(t / 1000.0))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="silu")(x)
    h = keras.layers.Add()([h, keras.layers.Reshape((1, 1, 8))(emb)])
    f = keras.layers.Rescaling(0.1)(keras.layers.Conv2D(image_shape[-1], 3, padding="same")(h))
    return keras.Model([x, t], keras.layers.Add()([x, f]), name="toy_eps")


def nan_eps_model(image_shape=(8, 8, 1)):
    """[x_t, t] -> eps that is NaN everywhere (a 1 x 1 convolution with NaN weights)."""
    x = keras.Input(list(image_shape))
    t = keras.Input([])
    conv = keras.layers.Conv2D(1, 1)
    model = keras.Model([x, t], conv(x))
    conv.set_weights([np.full([1, 1, 1, 1], np.nan, np.float32), np.zeros([1], np.float32)])
    return model


def conditional_eps_model(image_shape=(8, 8, 1), seed=1, label_layer="class_emb"):
    """[x_t, t, c int [B]] -> eps = x_t + 0.1 f(x_t, t, c) as in search_eps_model, with a label
    embedding (11 rows: 10 classes and the null label 10, named `label_layer`, which is how a
    Keras file's null label is found) added to the time embedding. Built-in layers only (a
    .keras file reloads them); a few ops, for end-to-end guided searches."""
    keras.utils.set_random_seed(seed)
    x, t = keras.Input(tuple(image_shape), name="x_t"), keras.Input((), name="t")
    c = keras.Input((), dtype="int32", name="c")
    label = keras.layers.Embedding(11, 8, name=label_layer)(c)
    emb = keras.layers.Dense(8, activation="silu")(keras.layers.Reshape((1,))(t / 1000.0))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="silu")(x)
    h = keras.layers.Add()([h, keras.layers.Reshape((1, 1, 8))(keras.layers.Add()([emb, label]))])
    f = keras.layers.Rescaling(0.1)(keras.layers.Conv2D(image_shape[-1], 3, padding="same")(h))
    return keras.Model([x, t, c], keras.layers.Add()([x, f]))


def conditional_unet(seed=0):
    """The package's class-conditional UNet [x_t [B, 8, 8, 1], t [B], labels [B]] -> eps (10
    classes, label 10 the null label), narrow (ch 8) and with N(0, 0.05) weights drawn from
    `seed`: for tests of how the package's own network is wrapped (conditional_eps_model is
    the cheaper stand-in for searches)."""
    from ddss_tf.nets import unet
    net = unet.build_unet(dict(unet.DIGITS_CONFIG, ch=8, norm_groups=4, num_classes=10))
    rng = np.random.default_rng(seed)
    for v in net.weights:
        v.assign(rng.normal(0, 0.05, v.shape).astype(np.float32))
    return net
