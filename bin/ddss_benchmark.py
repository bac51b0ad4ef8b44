"""The paper's table on one model: DDPM, DDIM, DPM-Solver++(2M), UniPC and learned GGDM samplers.

    ddss_benchmark --workdir=bench                     # bundled digits model, K = 3, 4, 5, 10, 20
    ddss_benchmark --searches=ddss_runs --workdir=bench   # reuse ddss_search's work directories
    ddss_benchmark --searches=ddss_runs --only_searched   # learned rows only where searched
    ddss_benchmark --samplers=ddim_quadratic,unipc --num_steps=5,10 --num_samples=500
    ddss_benchmark --model=digits_cond --guidance_scale=3 --workdir=bench_w3 --searches=cond_runs
    ddss_benchmark --model=eps.keras --schedule=linear_beta --dataset=cifar10 \
        --features=/data/inception_v3.pb --heldout_features=pixels --num_samples=50000

Every (sampler, K) cell scores --num_samples samples on fixed seeds (FID, KID +- SE, IS, held-out
FID) and is cached in <workdir>/cells, so rerunning the command resumes. Learned rows load a finished
search from <searches>/<ddss_search's directory name> or run it there first (minutes each on the
bundled model). Writes <workdir>/table.md, results.json, fid_vs_k.png and samples.png.
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)

from absl import flags

from ddss_tf import benchmark
from ddss_tf.search import SearchConfig

_B = benchmark.BenchmarkConfig()
FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "ddss_runs/benchmark", "Where the cells cache and the outputs go.")
flags.DEFINE_list("samplers", list(_B.samplers), "Rows to evaluate; accepted: "
                  + ", ".join(benchmark.sampler_names()) + ". Default with --guidance_scale: "
                  + ",".join(benchmark.default_samplers(conditional=True)) + "; a rectified-flow model "
                  "(prediction flow) adds its rows " + ",".join(benchmark.FLOW_ROWS) + ".")
flags.DEFINE_list("num_steps", [str(k) for k in _B.num_steps], "Columns: K values.")
flags.DEFINE_integer("num_samples", _B.num_samples, "Samples per cell (FID's bias shrinks as it "
                     "grows; the row training_data shows the bias at this count).", lower_bound=2)
flags.DEFINE_string("searches", "", "Directory of the learned rows' search work directories "
                    "(default <workdir>/searches; ddss_search writes to ddss_runs).")
flags.DEFINE_bool("only_searched", _B.only_searched, "Learned rows: score only the K whose "
                  "search in --searches has finished and leave the other cells empty, instead "
                  "of searching them first (a table of what exists, without new searches).")
cli.define_model_flags()  # --model --schedule --num_timesteps --prediction
cli.define_data_flags()   # --dataset --split
_TEMPLATE = ("features", "heldout_features")  # of the template search
cli.define_flags(SearchConfig, _TEMPLATE)
flags.DEFINE_integer("batch_size", None, "Global batch of each search; default: ddss_search's "
                     "at the row's K.", lower_bound=2)
flags.DEFINE_integer("train_steps", None, "Optimiser steps of each search; default: "
                     "ddss_search's at the row's K.", lower_bound=1)
flags.DEFINE_float("learning_rate", None, "Peak Adam learning rate of each search; default: "
                   "ddss_search's at the row's K.", lower_bound=0)
flags.DEFINE_float("guidance_scale", None, "A class-conditional model (e.g. --model=digits_cond): "
                   "the classifier-free guidance scale every row samples at; records gain "
                   "per-class FID / KID and held-out accuracy.", lower_bound=0)
flags.DEFINE_list("guidance_anchors", [f"{w:g}" for w in _B.guidance_anchors], "The anchor "
                  "scales of the rows ggdm_pred_time_across and ..._across_warm (one sampler "
                  "across scales, searched once for every benchmark sharing --searches).")


def _config():
    try:
        ks = tuple(int(k) for k in FLAGS.num_steps)
    except ValueError:
        raise cli.UsageError(f"--num_steps must be integers, got {FLAGS.num_steps}") from None
    try:
        anchors = tuple(float(w) for w in FLAGS.guidance_anchors)
    except ValueError:
        raise cli.UsageError(f"--guidance_anchors must be numbers, got "
                             f"{FLAGS.guidance_anchors}") from None
    # Built here (not copied from a resolved SearchConfig): the objective and recipe stay
    # unresolved, for each row to resolve at its own K and guidance as `ddss_search` does.
    search = SearchConfig(**cli.model_options(), **cli.data_options(),
                          **cli.flag_settings(SearchConfig, _TEMPLATE),
                          guidance_scale=FLAGS.guidance_scale)
    rows = FLAGS.samplers if FLAGS["samplers"].present else benchmark.default_samplers(
        conditional=FLAGS.guidance_scale is not None, flow=search.prediction == "flow")
    return benchmark.BenchmarkConfig(samplers=tuple(rows), num_steps=ks, guidance_anchors=anchors,
                                     num_samples=FLAGS.num_samples, searches=FLAGS.searches,
                                     only_searched=FLAGS.only_searched,
                                     train_steps=FLAGS.train_steps,
                                     learning_rate=FLAGS.learning_rate,
                                     batch_size=FLAGS.batch_size, search=search)


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}; all options are --flags")
    benchmark.run(_config(), FLAGS.workdir)  # interrupted: cli.run exits 130 / 143
    print(f"table in {FLAGS.workdir}/table.md; plots {FLAGS.workdir}/fid_vs_k.png and "
          f"{FLAGS.workdir}/samples.png")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
