"""Small Keras eps-models for the memory tests (test helper)."""

import keras


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
