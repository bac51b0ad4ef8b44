"""Peak memory of one DDSS gradient through a K-step sampler, with and without remat.

    PYTHONPATH=. python tools/bench_remat_memory.py --num_steps=20

Builds a small convolutional eps-model (random weights: memory does not depend on
them), a GGDM +PRED +TIME sampler over it, and measures the allocator's peak while
computing d loss / d sampler variables, with every network call wrapped in
tf.recompute_grad (remat) and without, eagerly, in tf.function and with XLA. Peak is
tf.config.experimental.get_memory_info("CPU:0")["peak"] after reset_memory_stats,
minus the memory held before the step (weights, inputs). Not a test: a benchmark
whose numbers go into the issue's closing note.
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)
from ddss_tf import noise as noise_lib

import keras
import tensorflow as tf
from absl import flags

from ddss_tf import denoisers
from ddss_tf import samplers
from ddss_tf import schedules

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_steps", 20, "K, network evaluations per sample.", lower_bound=2)
flags.DEFINE_integer("batch_size", 8, "Samples per gradient step.", lower_bound=1)
flags.DEFINE_integer("image_size", 16, "Height and width of the images.", lower_bound=4)
flags.DEFINE_integer("channels", 64, "Width of the model's conv layers.", lower_bound=1)
flags.DEFINE_integer("depth", 4, "Number of hidden conv layers.", lower_bound=1)
flags.DEFINE_list("modes", ["eager", "graph", "xla"], "Execution modes to measure.")

_DEVICE = "CPU:0"


def conv_eps_model(size, channels, depth):
    """(x_t [B, size, size, 3], t [B]) -> eps: a stack of 3x3 convs with a time embedding."""
    x_in = keras.Input((size, size, 3))
    t_in = keras.Input(())
    emb = keras.layers.Dense(channels, activation="swish")(
        keras.layers.Lambda(lambda t: tf.stack([tf.sin(t / 100.0), tf.cos(t / 100.0)], -1))(t_in))
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="swish")(x_in)
    for _ in range(depth - 1):
        h = h + keras.layers.Reshape((1, 1, channels))(emb)
        h = keras.layers.Conv2D(channels, 3, padding="same", activation="swish")(h)
    return keras.Model([x_in, t_in], keras.layers.Conv2D(3, 3, padding="same")(h))


def peak_bytes(layer, x_T, noise, mode):
    """Allocator peak above the starting point, for one loss + gradient evaluation."""

    def grads(x, z):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x, z)))
        return tape.gradient(loss, layer.trainable_variables)

    fn = grads if mode == "eager" else tf.function(grads, jit_compile=(mode == "xla"))
    fn(x_T, noise)                                        # trace / compile / warm up
    start = tf.config.experimental.get_memory_info(_DEVICE)["current"]
    tf.config.experimental.reset_memory_stats(_DEVICE)
    out = fn(x_T, noise)
    peak = tf.config.experimental.get_memory_info(_DEVICE)["peak"]
    del out
    return peak - start


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}; all options are --flags")
    bad = sorted(set(FLAGS.modes) - {"eager", "graph", "xla"})
    if bad:
        raise cli.UsageError(f"--modes: unknown {bad}; accepted: eager, graph, xla")
    sched = schedules.linear_beta(1000)
    den = denoisers.from_keras_model(conv_eps_model(FLAGS.image_size, FLAGS.channels, FLAGS.depth), sched)
    k = FLAGS.num_steps
    x_T, noise = noise_lib.draw(0, k, [FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3])
    print(f"GGDM +PRED +TIME, K={k}, batch {FLAGS.batch_size}x{FLAGS.image_size}x{FLAGS.image_size}x3, "
          f"{FLAGS.depth} conv layers x {FLAGS.channels} channels")
    for mode in FLAGS.modes:
        peaks = {}
        for remat in (True, False):
            layer = samplers.create("ggdm", den, num_steps=k, pred=True, time=True, remat=remat)
            peaks[remat] = peak_bytes(layer, x_T, noise, mode)
        ratio = peaks[True] / max(peaks[False], 1)
        print(f"{mode:6s} peak with remat {peaks[True] / 2**20:8.1f} MiB, without "
              f"{peaks[False] / 2**20:8.1f} MiB, ratio {ratio:.3f} ({'<' if ratio < 1 / 3 else '>='} 1/3)")
    return 0


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
