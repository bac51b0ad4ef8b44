"""Learn a K-step sampler for a diffusion model by backpropagating KID through the chain (DDSS).

    ddss_search                      # the main job: GGDM +PRED +TIME, K=10, bundled digits model
    ddss_search --num_steps=5 --family=ggdm --nopred --notime --workdir=/tmp/ggdm5
    ddss_search --model=eps.keras --schedule=linear_beta --dataset=cifar10 --features=/inception

Writes checkpoints, TensorBoard logs, sample grids, results.{md,json}, coefficients.json and a
SavedModel export into --workdir (default: ./ddss_runs/<family>[_pred][_time]_k<K>). Rerunning
the same command resumes an interrupted search. Every setting flag is a field of
ddss_tf.search.SearchConfig, with its help.
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)

import os

from absl import flags

from ddss_tf import samplers, settings
from ddss_tf.search import SearchConfig, run_search, strategies, workdir as workdir_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Work directory (default: ./ddss_runs/<family>..._k<K>).")
# Every SearchConfig field is a flag; guidance_scale takes one number or a list.
_BY_HAND = ("guidance_scale",)
cli.define_flags(SearchConfig, exclude=_BY_HAND)
flags.DEFINE_list("guidance_scale", None, settings.describe(SearchConfig, _BY_HAND)[0].help)
flags.DEFINE_integer("cpu_devices", 0, "Present the CPU as this many devices, so that "
                     "--strategy=mirrored runs as many replicas without GPUs (a rehearsal of a "
                     "multi-device search); 0: as TensorFlow sees it.", lower_bound=0)


def _scale(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 else None


flags.register_validator(
    "guidance_scale", lambda v: v is None or all(_scale(s) is not None for s in v),
    "--guidance_scale takes numbers >= 0, e.g. 3 or 0,1,3")
_PRED_FAMILIES = [f for f in samplers.learnable_names() if "pred" in samplers.options(f)]


def _config():
    values = cli.flag_settings(SearchConfig, exclude=_BY_HAND)
    if FLAGS.guidance_scale is not None:  # one scale, or the anchors of a sampler across scales
        scales = [float(s) for s in FLAGS.guidance_scale]
        values["guidance_scale"] = scales[0] if len(scales) == 1 else scales
    values.update(cli.model_options())  # its check: --num_timesteps with a schedule name only
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
        print(f"results in {os.path.join(workdir, workdir_lib.REPORT)}; SavedModel in "
              f"{result['export']}")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
