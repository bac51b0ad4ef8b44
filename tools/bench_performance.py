"""Performance of a search step and of the exported sampler, as ratios measured in one run.

    PYTHONPATH=. python tools/bench_performance.py                      # the bundled digits model, K = 5, 10, 20
    PYTHONPATH=. python tools/bench_performance.py --parts=sampling --num_steps=10

Three tables (docs/performance.md records them with the machine), from two parts:
  search    seconds per DDSS step (GGDM +PRED +TIME, global batch --batch_size, the trainer
            `ddss_search` runs) against K bare forward passes of the network on the same batch,
            with XLA on and off. The floor is about 3x: forward, recomputed forward, backward.
  (search)  peak allocator memory of one search step with and without rematerialisation
            (tf.config.experimental.get_memory_info, minus what was held before the step).
  sampling  throughput of the exported SavedModel's serving_default (noise drawn inside, uint8
            out) against K bare forward passes in a tf.function (the two timed alternately),
            at batch sizes 1 and 256: the overhead of the sampler's arithmetic.
Every timing is the median of --repeats timed calls after a warm-up (compilation excluded).
Not a test: a benchmark whose tables go into docs/performance.md.
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)

import os
import statistics
import tempfile
import time

import tensorflow as tf
from absl import flags

from ddss_tf import export, models, samplers
from ddss_tf.search import SearchConfig
from ddss_tf.search.run import Run

FLAGS = flags.FLAGS
flags.DEFINE_list("parts", ["search", "sampling"], "Tables to measure: search (speed and "
                  "memory of a search step), sampling (the exported SavedModel).")
flags.DEFINE_list("num_steps", ["5", "10", "20"], "K values.")
flags.DEFINE_integer("batch_size", 128, "Global batch of a search step.", lower_bound=2)
flags.DEFINE_list("sample_batches", ["1", "256"], "Batch sizes of the sampling table.")
flags.DEFINE_integer("repeats", 10, "Timed calls per measurement (the median is reported).",
                     lower_bound=1)

_PARTS = ("search", "sampling")
_DEVICE = "CPU:0"
_QUIET = lambda *a: None  # noqa: E731


def _median_seconds(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _forward_fn(net, batch, image_shape, xla):
    """A compiled bare forward pass of the network at `batch` (the unit of every ratio)."""
    x = tf.random.stateless_normal([batch, *image_shape], [1, 2])
    t = tf.fill([batch], 500.0)
    fn = tf.function(lambda x, t: net([x, t], training=False), jit_compile=xla)
    return lambda: fn(x, t).numpy()


def _run(k, xla, remat, batch):
    """A search's Run at these settings (its work directory is never written: only its
    trainer's steps are timed)."""
    cfg = SearchConfig(num_steps=k, xla=xla, remat=remat, batch_size=batch, train_steps=10**6)
    return Run(cfg, tempfile.gettempdir(), _QUIET)


def _peak_step_bytes(trainer):
    """Allocator peak of one (already compiled) search step above what was held before it."""
    start = tf.config.experimental.get_memory_info(_DEVICE)["current"]
    tf.config.experimental.reset_memory_stats(_DEVICE)
    trainer.train_step()
    return tf.config.experimental.get_memory_info(_DEVICE)["peak"] - start


def search_tables(ks, batch, repeats):
    """Step time (XLA on / off, remat on) and peak memory (remat on / off, XLA on) per K;
    each compiled step is timed and measured by the same trainer."""
    speed, memory = [], []
    for k in ks:
        fwd, step, peak = {}, {}, {}
        for xla, remat in ((True, True), (False, True), (True, False)):
            run = _run(k, xla, remat, batch)
            step[xla, remat] = _median_seconds(run.trainer.train_step, repeats)
            peak[xla, remat] = _peak_step_bytes(run.trainer)
            if remat:
                ev = run.evaluator
                fwd[xla] = _median_seconds(_forward_fn(ev.net, batch, ev.image_shape, xla),
                                           5 * repeats)
        for xla in (True, False):
            speed.append(f"| {k} | {'on' if xla else 'off'} | {step[xla, True]:.3f} | "
                         f"{fwd[xla] * 1e3:.2f} ms | {step[xla, True] / (k * fwd[xla]):.2f} |")
        with_, without = peak[True, True], peak[True, False]
        memory.append(f"| {k} | {with_ / 2**20:.1f} MiB | {without / 2**20:.1f} MiB | "
                      f"{without / max(with_, 1):.1f}x | {step[True, True]:.3f} | "
                      f"{step[True, False]:.3f} |")
        print(f"K={k} measured", flush=True)
    print(f"\n## search: seconds per step vs K bare forward passes (batch {batch}, remat on)\n")
    print("| K | XLA | s / step | forward (batch) | step / (K x forward) |\n|---|---|---|---|---|")
    print("\n".join(speed))
    print(f"\n## memory: peak of one search step (batch {batch}, XLA on)\n")
    print("| K | with remat | without remat | without / with | s / step with | s / step without |")
    print("|---|---|---|---|---|---|")
    print("\n".join(memory), flush=True)


def _interleaved_seconds(fn_a, fn_b, repeats):
    """Median seconds of fn_a and of fn_b, timed alternately (a, b, a, b, ...) after a
    warm-up, so drifts of the machine's speed hit both alike."""
    for _ in range(2):
        fn_a(), fn_b()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, a), (fn_b, b)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def sampling_table(ks, batches, repeats):
    print("\n## sampling: exported SavedModel vs K bare forward passes\n")
    print("| K | batch | SavedModel s / batch | samples / s | K x forward s | overhead |")
    print("|---|---|---|---|---|---|")
    denoiser, net = models.load_denoiser("digits")
    image_shape = list(models.image_shape(net))
    with tempfile.TemporaryDirectory() as tmp:
        for k in ks:
            layer = samplers.create("ggdm", denoiser, num_steps=k, pred=True, time=True,
                                    init="ddim", remat=False)
            path = export.export_sampler(layer, os.path.join(tmp, f"k{k}"))
            serve = tf.saved_model.load(path).signatures["serving_default"]
            for batch in batches:
                n, seed = tf.constant(batch, tf.int32), tf.constant([0, 1], tf.int32)
                forward = _forward_fn(net, batch, image_shape, False)
                exported, forwards = _interleaved_seconds(
                    lambda: serve(num_samples=n, seed=seed)["images"].numpy(),
                    lambda: [forward() for _ in range(k)], repeats)
                print(f"| {k} | {batch} | {exported * 1e3:.2f} ms | {batch / exported:.0f} | "
                      f"{forwards * 1e3:.2f} ms | {exported / forwards - 1:+.1%} |", flush=True)


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}; all options are --flags")
    bad = sorted(set(FLAGS.parts) - set(_PARTS))
    if bad:
        raise cli.UsageError(f"--parts: unknown {bad}; accepted: {', '.join(_PARTS)}")
    try:
        ks = [int(k) for k in FLAGS.num_steps]
        batches = [int(b) for b in FLAGS.sample_batches]
    except ValueError:
        raise cli.UsageError("--num_steps and --sample_batches must be integers") from None
    print(f"TensorFlow {tf.__version__}; {os.cpu_count()} CPU cores; the bundled digits DDPM "
          "(8x8x1 images, 1.0M-parameter UNet)")
    if "search" in FLAGS.parts:
        search_tables(ks, FLAGS.batch_size, FLAGS.repeats)
    if "sampling" in FLAGS.parts:
        sampling_table(ks, batches, FLAGS.repeats)
    return 0


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
