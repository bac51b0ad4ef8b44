"""Train a base DDPM (L_simple, EMA, warm-up, gradient clipping), resumable.

    ddss_train_model --workdir=/tmp/digits_ddpm
    ddss_train_model --workdir=/tmp/digits_flow --schedule=rectified_flow   # a flow model

With no other flags this reproduces the bundled digits model; with --schedule=rectified_flow
(and --shift, --time_scale) it trains a rectified-flow velocity model instead (flow matching),
as the bundled digits_flow (docs/bundled_models.md has the exact commands and wall times).
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)

from absl import flags

from ddss_tf import data, schedules
from ddss_tf.training import ddpm

_D = ddpm.TrainConfig()
_NET = _D.net
FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for config, checkpoints, TensorBoard and the model.")
flags.DEFINE_string("dataset", _D.dataset, f"Training data; one of {data.names()}.")
flags.DEFINE_integer("train_steps", _D.train_steps, "Number of optimiser steps.", lower_bound=1)
flags.DEFINE_integer("batch_size", _D.batch_size, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", _D.learning_rate, "Peak Adam learning rate.", lower_bound=0)
flags.DEFINE_integer("warmup_steps", _D.warmup_steps, "Linear warm-up steps.", lower_bound=0)
flags.DEFINE_float("grad_clip", _D.grad_clip, "Global-norm gradient clipping.", lower_bound=0)
flags.DEFINE_float("ema_decay", _D.ema_decay, "EMA decay of the exported weights.",
                   lower_bound=0, upper_bound=0.999999)
flags.DEFINE_integer("seed", _D.seed, "Seed of the initialisation and of every batch.")
flags.DEFINE_boolean("xla", _D.xla, "Compile the train step with XLA.")
flags.DEFINE_integer("ch", _NET["ch"], "UNet base channels.", lower_bound=1)
flags.DEFINE_list("ch_mult", [str(m) for m in _NET["ch_mult"]], "UNet channel multipliers.")
flags.DEFINE_integer("num_res_blocks", _NET["num_res_blocks"], "Residual blocks per level.",
                     lower_bound=1)
flags.DEFINE_list("attn_resolutions", [str(r) for r in _NET["attn_resolutions"]],
                  "Resolutions with self-attention.")
flags.DEFINE_float("dropout", _NET["dropout"], "Dropout rate.", lower_bound=0, upper_bound=0.99)
flags.DEFINE_integer("num_classes", 0, "N > 0: a class-conditional network on the data's labels "
                     "0..N-1 (a third input c; label N means none, for classifier-free guidance); "
                     "0: unconditional.", lower_bound=0)
flags.DEFINE_float("label_dropout", _D.label_dropout, "--num_classes > 0: probability that a "
                   "training label is replaced by the null label N.", lower_bound=0,
                   upper_bound=0.99)
flags.DEFINE_enum("schedule", "linear_beta", schedules.names(), "Noise schedule, and with it the "
                  "objective: L_simple on eps, or on rectified_flow the velocity eps - x0 "
                  "(flow matching; uniform flow time, then --shift).")
flags.DEFINE_integer("num_timesteps", 1000, "T.", lower_bound=2)
flags.DEFINE_float("shift", 1.0, "--schedule=rectified_flow: SD3's time shift k, s = k u / "
                   "(1 + (k - 1) u) (1: plain rectified flow; SD3 uses 3).", lower_bound=0)
flags.DEFINE_float("time_scale", 1000.0, "--schedule=rectified_flow: the network's time is "
                   "time_scale * s (1000, KerasHub's SD3 convention, spreads the UNet's "
                   "sinusoidal embedding as DDPM's 0..999 do).", lower_bound=0)
flags.DEFINE_integer("checkpoint_every", _D.checkpoint_every, "Steps between checkpoints.",
                     lower_bound=1)
flags.DEFINE_integer("log_every", _D.log_every, "Steps between log lines / scalars.", lower_bound=1)
flags.mark_flag_as_required("workdir")
for _name in ("ch_mult", "attn_resolutions"):
    flags.register_validator(_name, lambda v: all(s.strip().isdigit() for s in v),
                             message=f"--{_name} must be a comma-separated list of positive integers")


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}; all options are --flags")
    net = dict(ch=FLAGS.ch, ch_mult=[int(m) for m in FLAGS.ch_mult],
               num_res_blocks=FLAGS.num_res_blocks,
               attn_resolutions=[int(r) for r in FLAGS.attn_resolutions],
               dropout=FLAGS.dropout, norm_groups=_NET["norm_groups"])
    if FLAGS.num_classes:  # absent otherwise: an unconditional run's config stays as it was
        net["num_classes"] = FLAGS.num_classes
    cfg = ddpm.TrainConfig(
        dataset=FLAGS.dataset, net=net, schedule=_schedule().get_config(),
        batch_size=FLAGS.batch_size, train_steps=FLAGS.train_steps,
        learning_rate=FLAGS.learning_rate, warmup_steps=FLAGS.warmup_steps,
        grad_clip=FLAGS.grad_clip, ema_decay=FLAGS.ema_decay, label_dropout=FLAGS.label_dropout,
        seed=FLAGS.seed, xla=FLAGS.xla,
        checkpoint_every=FLAGS.checkpoint_every, log_every=FLAGS.log_every)
    out = ddpm.train(cfg, FLAGS.workdir)
    if out:
        print(f"model written to {out}")


def _schedule():
    """The schedule the flags name; --shift and --time_scale only with rectified_flow."""
    config = dict(kind=FLAGS.schedule, num_timesteps=FLAGS.num_timesteps)
    flow_only = [f"--{n}" for n in ("shift", "time_scale") if FLAGS[n].present]
    if FLAGS.schedule == "rectified_flow":
        config.update(shift=FLAGS.shift, time_scale=FLAGS.time_scale)
    elif flow_only:
        raise cli.UsageError(f"--shift and --time_scale are for --schedule=rectified_flow only "
                             f"(got {' '.join(flow_only)} with --schedule={FLAGS.schedule})")
    try:
        return schedules.from_config(config)
    except ValueError as e:
        raise cli.UsageError(str(e)) from None


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
