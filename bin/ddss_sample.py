"""Draw samples from an exported sampler, a coefficients.json, or any family by name.

    ddss_sample --sampler=ddss_runs/ggdm_pred_time_k10/export --num_samples=64 --out=/tmp/s.npz
    ddss_sample --coefficients=ddss_runs/ggdm_pred_time_k10/coefficients.json --out=/tmp/s.npz
    ddss_sample --family=ddim --num_steps=10 --stride=quadratic --out=/tmp/ddim.npz
    ddss_sample --family=ddim --model=eps.keras --schedule=linear_beta --out=/tmp/ddim.npz
    ddss_sample --family=ddim --model=ckpt/model.ckpt-790000 --model_preset=cifar10 --out=/tmp/c.npz
    ddss_sample --sampler=ddss_runs/ggdm_pred_time_k10_w3/export --labels=0,1,2,3,4,5,6,7,8,9 \
        --guidance_scale=3 --out=/tmp/guided.npz         # a conditional model's sampler

Writes --out (.npz with `images`, float32 NHWC in the data range) and a PNG grid
beside it. The same flags give the same bytes (noise: see ddss_tf.sampling).
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)

from absl import flags

from ddss_tf import interrupt, models, progress, samplers, sampling

FLAGS = flags.FLAGS
flags.DEFINE_string("sampler", None, "An exported SavedModel directory (ddss_search's "
                    "<workdir>/export, or one version directory in it).")
flags.DEFINE_string("coefficients", None, "A coefficients.json to rebuild on --model.")
flags.DEFINE_enum("family", None, samplers.names(), "A sampler family by name (untrained).")
cli.define_model_flags()  # --model --schedule --num_timesteps --prediction (--coefficients,
                          # --family); with --coefficients the file's schedule and prediction
                          # are the defaults
flags.DEFINE_integer("num_steps", 10, "K, network evaluations per sample (--family).",
                     lower_bound=1)
flags.DEFINE_enum("stride", None, samplers.stride_names(), "Query times (--family); default: "
                  "the family's.")
flags.DEFINE_float("eta", None, "DDIM eta (--family=ddim).", lower_bound=0)
flags.DEFINE_enum("variance", None, ["small", "large"], "DDPM variance (--family=ddpm).")
flags.DEFINE_integer("num_samples", 64, "Number of samples.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the noise: batch b draws seed + b (ddss_tf.noise), so "
                     "runs meant to be independent need seeds further apart than their batches; "
                     "a search's results.md names the seed that redraws its evaluation.",
                     lower_bound=0, upper_bound=sampling.MAX_SEED)
flags.DEFINE_integer("batch_size", 256, "Samples per sampler call (part of the noise seeding).",
                     lower_bound=1)
flags.DEFINE_string("out", "samples.npz", "Output .npz; the PNG grid is written beside it.")
flags.DEFINE_list("labels", None, "A conditional model's sampler: the labels asked for, sample i "
                  "showing labels[i mod len(labels)] (e.g. 0,1,2,3,4,5,6,7,8,9).")
flags.DEFINE_float("guidance_scale", None, "A conditional model's sampler: the classifier-free "
                   "guidance scale (an export's: within the range it was searched for).",
                   lower_bound=0)
flags.register_validator("labels", lambda v: v is None or all(s.strip().isdigit() for s in v),
                         message="--labels must be a comma-separated list of integers >= 0")

_FAMILY_ONLY = ("num_steps", "stride", "eta", "variance")


def _source():
    given = [n for n in ("sampler", "coefficients", "family") if FLAGS[n].value is not None]
    if len(given) != 1:
        raise cli.UsageError("give exactly one of --sampler (an export), --coefficients (a "
                             f"coefficients.json) or --family ({'|'.join(samplers.names())}); "
                             f"got {', '.join('--' + n for n in given) or 'none'}")
    mode = given[0]
    stray = [n for n in _FAMILY_ONLY if FLAGS[n].present and mode != "family"]
    stray += [n for n in models.OPTIONS if FLAGS[n].present and mode == "sampler"]
    if stray:
        raise cli.UsageError(f"{', '.join('--' + n for n in stray)} do not apply with --{mode} "
                             "(the sampler is fixed by it)")
    if mode == "sampler":
        return sampling.from_export(FLAGS.sampler)
    model = cli.model_options()
    if mode == "coefficients":
        if not FLAGS["prediction"].present:
            model["prediction"] = None  # the file's
        return sampling.from_coefficients(FLAGS.coefficients, **model)
    options = {n: FLAGS[n].value for n in ("stride", "eta", "variance")
               if FLAGS[n].value is not None}
    return sampling.from_family(FLAGS.family, num_steps=FLAGS.num_steps, **model, **options)


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}; all options are --flags")
    sampling.check_output(FLAGS.out)  # before any work: a bad --out fails at once
    with interrupt.phase("loading the sampler", rerun=sampling.RERUN):
        source = _source()
    sampling.check_fits_in_memory(FLAGS.num_samples, source.image_shape)
    bar = progress.Progress(FLAGS.num_samples, desc="sample", first="compiling")
    labels = None if FLAGS.labels is None else [int(v) for v in FLAGS.labels]
    images, uint8 = sampling.draw(source, FLAGS.num_samples, FLAGS.seed, FLAGS.batch_size, bar,
                                  labels=labels, guidance_scale=FLAGS.guidance_scale)
    bar.close()
    npz, png = sampling.write(FLAGS.out, images, uint8)
    print(f"{len(images)} samples written to {npz} and {png}")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
