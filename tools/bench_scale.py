"""The DDSS search step at the paper's shapes, measured: compile time, step time, memory, FLOPs.

    PYTHONPATH=. python tools/bench_scale.py --out=docs/scale.json                 # every cell (hours on 2 cores)
    PYTHONPATH=. python tools/bench_scale.py --shapes=cifar10 --num_steps=5,20 --chains=loop,unrolled --remat=on

Stand-in networks with random weights (cost does not depend on the values), built as
diffusion_tf architectures (ddss_tf.nets.diffusion_tf) so each is what a converted checkpoint
would be:
  cifar10     Ho et al.'s CIFAR-10 UNet (preset cifar10, 35.7M), 32x32x3, T = 1000 linear
  imagenet64  an iDDPM ImageNet-64-size UNet (ch 128, mult 1,2,3,4, 3 blocks per level,
              attention at 16 and 8, single-head) with a 2C output, 64x64x3, T = 4000 cosine
  lsun128     Ho et al.'s LSUN UNet (ch 128, mult 1,1,2,2,4,4, 2 blocks, attention at 16),
              at 128x128x3, T = 1000 linear
Every cell is scored by InceptionV3's architecture (keras.applications, random weights, pool_3
2048-d and 1008 logits), saved once as a SavedModel and loaded through `metrics.load_inception`,
as a user's file is; images are resized to 299 inside the graph.

A cell is one setting (shape, K, remat, chain, precision) run in its own process: it builds the
search's sampler (GGDM +PRED +TIME) and `search.Trainer` (KID loss, linear kernel, the default
strategy, XLA) with a per-replica batch of --batch_size, then records
  compile_s   first step (trace + XLA compile + one step) minus a step, as ddss_search runs
              here (a looped chain: its loop as graph ops around the compiled network)
  xla_compile_s  tracing and compiling the whole step as one XLA program, as a TPU does
  step_s      median of --steps further steps
  peak_mib    allocator peak during one step above what was held before it
              (tf.config.experimental.get_memory_info), i.e. activations and XLA buffers; the
              allocator hands out whole chunks, so this reads up to 2x the need
  xla_temp_mib  XLA's own buffer assignment of the compiled gradient computation: its temporary
              buffers (activations kept for the backward pass, workspace), exact
  gflop       TensorFlow's profiler count of the float operations of the gradient computation's
              graph (the K-step chain, its remat recomputation, the backward pass, InceptionV3
              and the loss) as traced with the chain unrolled, which computes what the loop
              does: a graph's count takes a while loop's body once, whatever its trip count.
              (docs/scale.md's GFLOP column was measured before with XLA's HloCostAnalysis
              through jaxlib's private bindings, on the optimised program.)
Results accumulate in --out (JSON, one record per cell; rerunning skips the cells it holds),
and the table is printed as markdown. A benchmark, not a test: its numbers go into docs/scale.md.

    PYTHONPATH=. python tools/bench_scale.py --standins=/tmp/standins

writes the inputs of an end-to-end `ddss_search` at the CIFAR-10 shape instead (docs/scale.md):
a TF1 checkpoint of the CIFAR-10 architecture in diffusion_tf's variable names with random raw
and EMA weights (cifar10_ckpt/model.ckpt-0, for --model_preset=cifar10), the Inception
stand-in (inception_v3/) and 512 random 32x32x3 images (cifar10_random.npz).
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)

import json
import os
import statistics
import subprocess
import sys
import time

from absl import flags

FLAGS = flags.FLAGS
SHAPES = ("cifar10", "imagenet64", "lsun128")
flags.DEFINE_list("shapes", list(SHAPES), f"Shapes to measure: {', '.join(SHAPES)}.")
flags.DEFINE_list("num_steps", ["5", "10", "20"], "K values.")
flags.DEFINE_list("remat", ["on", "off"], "Rematerialisation settings: on, off.")
flags.DEFINE_list("chains", ["loop"], "Chain forms: loop (tf.while_loop), unrolled.")
flags.DEFINE_list("precisions", ["float32"], "Network precisions: float32, bfloat16.")
flags.DEFINE_integer("batch_size", 2, "Samples per step (one replica).", lower_bound=2)
flags.DEFINE_integer("steps", 2, "Timed steps after the first.", lower_bound=1)
flags.DEFINE_string("out", "scale.json", "JSON file the records accumulate in.")
flags.DEFINE_string("workdir", "/tmp/ddss_scale", "Where the Inception stand-in is saved.")
flags.DEFINE_float("max_gib", 18.0, "Skip a cell whose memory, extrapolated from a smaller K of "
                   "the same setting, would exceed this (the machine has 24 GiB).", lower_bound=1)
flags.DEFINE_string("standins", None, "Write the end-to-end rehearsal's inputs into this "
                    "directory and stop.")
flags.DEFINE_string("cell", None, "Internal: run one cell (JSON) and print its record.")

_DEVICE = "CPU:0"


def _shape(name):
    """(Architecture, image size, schedule config) of a stand-in."""
    from ddss_tf.nets import diffusion_tf

    linear = diffusion_tf.PRESETS["cifar10"][1]
    if name == "cifar10":
        return diffusion_tf.PRESETS["cifar10"][3], 32, linear
    if name == "imagenet64":
        arch = diffusion_tf.Architecture(128, (1, 2, 3, 4), 3, (2, 3), True, False, 3, 6)
        return arch, 64, {"kind": "cosine", "num_timesteps": 4000, "s": 0.008, "max_beta": 0.999}
    if name == "lsun128":
        return diffusion_tf.PRESETS["lsun_church"][3], 128, linear
    raise cli.UsageError(f"unknown shape {name!r}; accepted: {', '.join(SHAPES)}")


def _network(name):
    import numpy as np
    from ddss_tf import schedules
    from ddss_tf.nets import diffusion_tf, unet

    arch, size, sched = _shape(name)
    net = unet.build_unet(diffusion_tf.keras_config(arch, size), name=name)
    rng = np.random.default_rng(0)
    for v in net.weights:  # non-zero everywhere (the zero-initialised output convs included)
        fan_in = int(np.prod(v.shape[:-1])) if len(v.shape) > 1 else 1
        v.assign((rng.standard_normal(v.shape) / np.sqrt(fan_in)).astype(np.float32))
    return net, schedules.from_config(sched)


def inception_standin(path):
    """Save InceptionV3's architecture (random weights) as a SavedModel returning {"pool_3",
    "logits"} for images [B, 299, 299, 3] in [-1, 1], as metrics.load_inception reads it."""
    import keras
    import tensorflow as tf

    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    keras.utils.set_random_seed(0)
    base = keras.applications.InceptionV3(weights=None, include_top=True, classes=1008,
                                          classifier_activation=None)
    model = keras.Model(base.input, [base.get_layer("avg_pool").output, base.output])

    class Inception(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32)])
        def serve(self, images):
            pool, logits = self.model(images, training=False)
            return {"pool_3": pool, "logits": logits}

    module = Inception()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def write_standins(directory):
    """The inputs of the CIFAR-10-shape ddss_search rehearsal (see the module doc)."""
    import numpy as np
    import tensorflow as tf
    from ddss_tf.nets import diffusion_tf

    rng = np.random.default_rng(0)
    values = {"global_step": np.int64(0)}
    for name, shape in diffusion_tf.expected_variables(diffusion_tf.PRESETS["cifar10"][3]).items():
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        raw = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
        values[name] = raw
        values[f"{name}/{diffusion_tf.EMA}"] = raw * np.float32(0.99)
    ckpt_dir = os.path.join(directory, "cifar10_ckpt")
    os.makedirs(ckpt_dir, exist_ok=True)
    names = sorted(values)
    tf.raw_ops.SaveV2(prefix=os.path.join(ckpt_dir, "model.ckpt-0"), tensor_names=names,
                      shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(values[n]) for n in names])
    with open(os.path.join(ckpt_dir, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model.ckpt-0"\n')
    images = rng.integers(0, 256, [512, 32, 32, 3], dtype=np.uint8)
    np.savez(os.path.join(directory, "cifar10_random.npz"), images=images)
    inception_standin(os.path.join(directory, "inception_v3"))
    print(f"wrote {ckpt_dir}/model.ckpt-0, {directory}/cifar10_random.npz and "
          f"{directory}/inception_v3")


def _cell(spec):
    """One measurement in this process; returns its record."""
    import numpy as np
    import tensorflow as tf
    from tensorflow.compiler.xla.service import hlo_pb2  # XLA's HloProto, as TensorFlow ships it

    from ddss_tf import denoisers, metrics
    from ddss_tf.search import SearchConfig, trainer as trainer_lib
    from ddss_tf.search.objectives.kid import KIDLoss

    net, sched = _network(spec["shape"])
    image_shape = [int(d) for d in net.inputs[0].shape[1:]]
    extractor = metrics.load_inception(inception_standin(os.path.join(spec["workdir"],
                                                                      "inception_v3")))
    real = np.random.default_rng(1).standard_normal([256, 2048]).astype(np.float32)
    def trainer_for(chain):
        cfg = SearchConfig(num_steps=spec["k"], batch_size=spec["batch_size"], xla=True,
                           remat=spec["remat"] == "on", loop=chain == "loop",
                           precision=spec["precision"], train_steps=1000)
        strategy = tf.distribute.get_strategy()
        with strategy.scope():
            layer = cfg.build_sampler(denoisers.from_keras_model(net, sched))
        return trainer_lib.Trainer(layer, extractor, KIDLoss(real, cfg.kernel), strategy, cfg,
                                   image_shape)

    # FLOPs: a graph's float operations count a while loop's body once, so a looped chain's
    # graph would count one step of K; the unrolled chain computes the same (tested).
    unrolled = trainer_for("unrolled")
    inputs = unrolled.step_inputs(0)
    gflop = _graph_gflop(tf.function(unrolled.loss_and_gradients).get_concrete_function(*inputs))
    trainer = unrolled if spec["chain"] == "unrolled" else trainer_for(spec["chain"])

    start = time.perf_counter()
    trainer.train_step()
    first = time.perf_counter() - start
    times, peaks = [], []
    for _ in range(spec["steps"]):
        held = tf.config.experimental.get_memory_info(_DEVICE)["current"]
        tf.config.experimental.reset_memory_stats(_DEVICE)
        start = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - start)
        peaks.append(tf.config.experimental.get_memory_info(_DEVICE)["peak"] - held)
    step = statistics.median(times)
    record = dict(spec, params=int(net.count_params()), image_size=image_shape[0],
                  compile_s=round(first - step, 1), step_s=round(step, 2),
                  peak_mib=round(max(peaks) / 2 ** 20, 1))
    # The whole step as one XLA program, as a TPU compiles it (on this machine a looped chain
    # runs its loop as graph ops around a compiled network: search.trainer).
    whole = tf.function(trainer.loss_and_gradients, jit_compile=True)
    start = time.perf_counter()
    hlo = hlo_pb2.HloProto.FromString(whole.experimental_get_compiler_ir(
        *trainer.step_inputs(0))(stage="optimized_hlo_proto_serialized"))
    record["xla_compile_s"] = round(time.perf_counter() - start, 1)
    temp = sum(a.size for a in hlo.buffer_assignment.buffer_allocations
               if not (a.is_entry_computation_parameter or a.is_constant or a.is_thread_local
                       or a.maybe_live_out))
    record["xla_temp_mib"] = round(temp / 2 ** 20, 1)
    record["gflop"] = gflop
    return record


def _graph_gflop(concrete):
    """GFLOP of a traced function's graph, by TensorFlow's profiler (its float_operation count
    of the ops it has statistics for: convolutions, matrix products and the elementwise ops)."""
    import tensorflow as tf

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=concrete.graph, options=options)
    return round(profile.total_float_ops / 1e9, 2)


def _key(spec):
    return (spec["shape"], spec["k"], spec["remat"], spec["chain"], spec["precision"],
            spec["batch_size"])


def _table(records):
    head = ("| shape | params | K | chain | remat | precision | compile s | whole-step XLA compile s "
            "| s / step | peak MiB | XLA temp MiB | GFLOP / step |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [f"| {r['shape']} {r['image_size']}x{r['image_size']} | {r['params'] / 1e6:.1f}M | "
            f"{r['k']} | {r['chain']} | {r['remat']} | {r['precision']} | "
            + (f"{r['compile_s']} | {r['xla_compile_s']} | {r['step_s']} | {r['peak_mib']} | "
               f"{r['xla_temp_mib']} | {r['gflop']} |" if "skipped" not in r
               else f"skipped: {r['skipped']} | | | | | |")
            for r in sorted(records, key=lambda r: (SHAPES.index(r["shape"]), r["k"], r["chain"],
                                                    r["remat"], r["precision"]))]
    return "\n".join([head] + rows)


def _predicted_gib(records, spec):
    """Memory of `spec` extrapolated linearly in K from the measured cells of its setting."""
    same = [r for r in records if "peak_mib" in r and _key(r)[0] == spec["shape"]
            and _key(r)[2:] == _key(spec)[2:]]
    if not same:
        return None
    r = max(same, key=lambda r: r["k"])
    return max(r["peak_mib"], r["xla_temp_mib"]) / 1024 * spec["k"] / r["k"]


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}; all options are --flags")
    if FLAGS.standins:
        return write_standins(FLAGS.standins)
    if FLAGS.cell:
        print(json.dumps(_cell(json.loads(FLAGS.cell))))
        return 0
    for name, values, accepted in (("remat", FLAGS.remat, ("on", "off")),
                                   ("chains", FLAGS.chains, ("loop", "unrolled")),
                                   ("precisions", FLAGS.precisions, ("float32", "bfloat16")),
                                   ("shapes", FLAGS.shapes, SHAPES)):
        bad = sorted(set(values) - set(accepted))
        if bad:
            raise cli.UsageError(f"--{name}: unknown {bad}; accepted: {', '.join(accepted)}")
    try:
        ks = sorted(int(k) for k in FLAGS.num_steps)
    except ValueError:
        raise cli.UsageError(f"--num_steps must be integers, got {FLAGS.num_steps}") from None
    os.makedirs(FLAGS.workdir, exist_ok=True)
    records = []
    if os.path.exists(FLAGS.out):
        with open(FLAGS.out) as f:
            records = json.load(f)
    done = {_key(r) for r in records}
    for shape in FLAGS.shapes:
        for remat in FLAGS.remat:
            for chain in FLAGS.chains:
                for precision in FLAGS.precisions:
                    for k in ks:
                        spec = dict(shape=shape, k=k, remat=remat, chain=chain,
                                    precision=precision, batch_size=FLAGS.batch_size,
                                    steps=FLAGS.steps, workdir=FLAGS.workdir)
                        if _key(spec) in done:
                            continue
                        records.append(_run_cell(spec, records))
                        with open(FLAGS.out, "w") as f:
                            json.dump(records, f, indent=1)
    print(_table(records))
    return 0


def _run_cell(spec, records):
    predicted = _predicted_gib(records, spec)
    if predicted is not None and predicted > FLAGS.max_gib:
        print(f"skip {_key(spec)}: about {predicted:.0f} GiB", flush=True)
        return dict(spec, params=0, image_size=_shape(spec["shape"])[1],
                    skipped=f"~{predicted:.0f} GiB by linear extrapolation in K")
    print(f"cell {_key(spec)} ...", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, f"--cell={json.dumps(spec)}"],
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = " ".join(proc.stderr.split())[-300:]
        print(f"  failed: {tail}", flush=True)
        return dict(spec, params=0, image_size=_shape(spec["shape"])[1],
                    skipped=f"failed ({tail[-120:]})")
    record = json.loads(lines[-1])
    print(f"  {record} ({time.perf_counter() - start:.0f} s)", flush=True)
    return record


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
