"""Learn a K-step sampler for a diffusion model by backpropagating KID through the chain (DDSS).

    ddss_search                      # the main job: GGDM +PRED +TIME, K=10, bundled digits model
    ddss_search --num_steps=5 --family=ggdm --nopred --notime --workdir=/tmp/ggdm5
    ddss_search --model=eps.keras --schedule=linear_beta --dataset=cifar10 --features=/inception

Writes checkpoints, TensorBoard logs, sample grids, results.{md,json}, coefficients.json and a
SavedModel export into --workdir (default: ./ddss_runs/<family>[_pred][_time]_k<K>). Rerunning
the same command resumes an interrupted search.
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)

import dataclasses
import os

from absl import flags

from ddss_tf import samplers
from ddss_tf.metrics import mmd
from ddss_tf.precision import PRECISIONS
from ddss_tf.search import SearchConfig, objectives, run_search, strategies
from ddss_tf.search.config import (FEW_STEPS, LR_DECAYS, MAX_SEED, MIN_EVAL_SAMPLES, SELECTS,
                                   default_optimisation, default_select)

_D = SearchConfig()
FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Work directory (default: ./ddss_runs/<family>..._k<K>).")
cli.define_model_flags()  # --model --schedule --num_timesteps --prediction
cli.define_data_flags()   # --dataset --split
_FAMILIES = {f: o.name for o in reversed(objectives.all_objectives()) for f in o.families()}
_OTHERS = [f for f, o in _FAMILIES.items() if f not in samplers.learnable_names()]
flags.DEFINE_enum("family", _D.family, sorted(_FAMILIES),
                  "Learnable sampler family; " + ", ".join(f"{f} with --objective={_FAMILIES[f]}"
                                                          for f in _OTHERS) + ".")
flags.DEFINE_integer("num_steps", _D.num_steps, "K, network evaluations per sample.", lower_bound=1)
flags.DEFINE_enum("stride", None, samplers.stride_names(), "Initial query times; default: the "
                  "family's (quadratic; logsnr_uniform for dpm_solver_pp_2m and unipc).")
_PRED_FAMILIES = [f for f in samplers.learnable_names() if "pred" in samplers.options(f)]
flags.DEFINE_boolean("pred", _D.pred, "+PRED: learn the x0-prediction coefficients (--family="
                     f"{'|'.join(_PRED_FAMILIES)}).")
flags.DEFINE_boolean("time", _D.time, "+TIME: learn the query times.")
flags.DEFINE_enum("init", _D.init,
                  sorted({i for f in samplers.learnable_names() for i in samplers.inits(f)}),
                  "Baseline the untrained sampler reproduces.")
flags.DEFINE_list("start_from", None, "Start from learned coefficients instead of --init's: a "
                  "coefficients.json of this family, K and settings (e.g. a finished search's). "
                  "With a list of guidance scales, one per scale (the searches made at each; "
                  "anchor j starts from file j) or one for all.")
flags.DEFINE_enum("objective", _D.objective, objectives.names(), "; ".join(
    f"{o.name}: {o.summary}" for o in objectives.all_objectives()) + ".")
flags.DEFINE_float("teacher_weight", _D.teacher_weight, "--objective=kid_teacher: the weight "
                   "of the teacher term beside the KID loss.", lower_bound=0)
flags.DEFINE_integer("teacher_steps", _D.teacher_steps, "--objective=ld3|kid_teacher: the "
                     "teacher's steps (DPM-Solver++(2M)).", lower_bound=1)
flags.DEFINE_integer("ld3_pairs", _D.ld3_pairs, "--objective=ld3|kid_teacher: the (x_T, "
                     "teacher) pairs trained on.", lower_bound=1)
flags.DEFINE_float("ld3_radius", _D.ld3_radius, "--objective=ld3: the soft teacher's ball "
                   "around x_T, relative to |x_T| ~ sqrt(H W C); 0: the plain teacher.",
                   lower_bound=0)
def _nonnegative(text):
    try:
        return float(text) >= 0
    except ValueError:
        return False


flags.DEFINE_list("guidance_scale", None, "A class-conditional model (a third input c of "
                  "labels): the classifier-free guidance scale w the sampler is searched for "
                  "(0: the plain conditional model); unconditional models take none. A list "
                  "(e.g. 0,1,3): one sampler across the scales, its coefficients learned at each "
                  "and interpolated between them (served at any w in the range).")
flags.register_validator(
    "guidance_scale", lambda v: v is None or all(_nonnegative(s) for s in v),
    "--guidance_scale takes numbers >= 0, e.g. 3 or 0,1,3")
flags.DEFINE_enum("kernel", _D.kernel, list(mmd.kernel_names()), "KID kernel of the loss.")
flags.DEFINE_string("features", _D.features, "Feature network of the loss: digits, pixels, or a "
                    "path to an Inception file.")
flags.DEFINE_string("heldout_features", _D.heldout_features, "Feature network of the held-out "
                    "metric (never trained against).")
flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size.", lower_bound=2)
_FEW, _MANY = default_optimisation(FEW_STEPS), default_optimisation(FEW_STEPS + 1)
flags.DEFINE_integer("train_steps", None, f"Optimiser steps; default: {_FEW[0]} at K <= "
                     f"{FEW_STEPS}, else {_MANY[0]} (and {_MANY[0]} with --objective=ld3).",
                     lower_bound=1)
flags.DEFINE_float("learning_rate", None, f"Peak Adam learning rate; default: {_FEW[1]:g} at K "
                   f"<= {FEW_STEPS}, else {_MANY[1]:g} (and {_MANY[1]:g} with --objective=ld3).",
                   lower_bound=0)
flags.DEFINE_enum("lr_decay", _D.lr_decay, list(LR_DECAYS), "Learning-rate schedule over "
                  "train_steps: cosine to 0, or constant (the paper's).")
flags.DEFINE_enum("select", None, list(SELECTS), "Coefficients kept: best: those of the "
                  "start or of a periodic evaluation with the lowest FID on --eval_samples "
                  "validation samples "
                  "(x_T never used by the final evaluation or the benchmark); last: the last "
                  f"step's (the paper's). Default: {default_select('kid')} "
                  f"({default_select('ld3')} with --objective=ld3).")
flags.DEFINE_float("grad_clip", _D.grad_clip, "Global-norm clipping; 0 disables.", lower_bound=0)
flags.DEFINE_integer("seed", _D.seed, "Seed of every training batch's noise.", lower_bound=0,
                     upper_bound=MAX_SEED)
flags.DEFINE_enum("strategy", _D.strategy, list(strategies.names()), "tf.distribute strategy.")
flags.DEFINE_string("tpu", _D.tpu, "TPU name for --strategy=tpu ('local' on a TPU VM / Colab).")
flags.DEFINE_integer("worker_timeout", _D.worker_timeout, "--strategy=multi_worker: seconds a "
                     "worker waits for the cluster to form, and for any one collective (a peer "
                     "that hangs), before it exits; 0: forever. Must exceed the chief's work "
                     "while the others wait: reference statistics and baselines before "
                     "training, and each periodic evaluation.", lower_bound=0)
flags.DEFINE_integer("cpu_devices", 0, "Present the CPU as this many devices, so that "
                     "--strategy=mirrored runs as many replicas without GPUs (a rehearsal of a "
                     "multi-device search); 0: as TensorFlow sees it.", lower_bound=0)
flags.DEFINE_boolean("xla", _D.xla, "XLA-compile the sampling chain.")
flags.DEFINE_boolean("remat", _D.remat, "Rematerialise network calls (memory flat in K).")
flags.DEFINE_boolean("loop", _D.loop, "Run the sampling chain as one tf.while_loop, so XLA "
                     "compiles the network once whatever K (--noloop: unrolled, compile time "
                     "growing with K).")
flags.DEFINE_enum("precision", _D.precision, list(PRECISIONS), "Arithmetic of the networks in "
                  "the search step: bfloat16 for TPUs / recent GPUs (Keras networks; the "
                  "sampler, the chain and the loss stay float32). Evaluation and export: "
                  "float32.")
flags.DEFINE_integer("checkpoint_every", _D.checkpoint_every, "Steps between checkpoints.",
                     lower_bound=1)
flags.DEFINE_integer("eval_every", _D.eval_every, "Steps between FID/KID evaluations.",
                     lower_bound=1)
flags.DEFINE_integer("eval_samples", _D.eval_samples, "Samples per periodic evaluation.",
                     lower_bound=MIN_EVAL_SAMPLES)
flags.DEFINE_integer("final_samples", _D.final_samples, "Samples of the final comparison.",
                     lower_bound=MIN_EVAL_SAMPLES)
flags.DEFINE_integer("reference_steps", _D.reference_steps, "Steps of the DDPM reference row of "
                     "the final comparison (capped at the model's T; computed once per model).",
                     lower_bound=1)


def _config():
    names = [f.name for f in dataclasses.fields(SearchConfig)]
    values = {n: getattr(FLAGS, n) for n in names if n in FLAGS and getattr(FLAGS, n) is not None}
    if FLAGS.guidance_scale is not None:  # one scale, or the anchors of a sampler across scales
        scales = [float(s) for s in FLAGS.guidance_scale]
        values["guidance_scale"] = scales[0] if len(scales) == 1 else scales
    values.update(**cli.model_options(), **cli.data_options())
    return SearchConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}; all options are --flags")
    if FLAGS.cpu_devices:
        strategies.split_cpu(FLAGS.cpu_devices)  # before anything starts TensorFlow's runtime
    cfg = _config()  # normalised: pred is False for a family without the option
    if FLAGS.pred and FLAGS["pred"].present and not cfg.pred:
        raise cli.UsageError(f"--pred applies to --family={'|'.join(_PRED_FAMILIES)} only, not "
                             f"{cfg.family}")
    workdir = FLAGS.workdir or os.path.join("ddss_runs", cfg.run_name())
    result = run_search(cfg, workdir)
    if result:
        print(f"results in {workdir}/results.md; SavedModel in {result['export']}")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
