"""Train a digits classifier whose penultimate layer serves as a feature space.

    ddss_train_classifier --out_dir=/tmp/digits_classifier

With no other flags this reproduces the bundled feature network; the held-out
metric network uses --channels=16,32,64 --feature_dim=64 --seed=1
(docs/bundled_models.md has both commands).
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)

from absl import flags

from ddss_tf import data
from ddss_tf.training import classifier

_D = classifier.ClassifierConfig()
FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Where to write config.json and model.weights.h5.")
flags.DEFINE_string("dataset", _D.dataset, f"Training data; one of {data.names()}.")
flags.DEFINE_list("channels", [str(c) for c in _D.net["channels"]], "Conv widths, one per stage.")
flags.DEFINE_integer("feature_dim", _D.net["feature_dim"], "Width of the feature layer.",
                     lower_bound=2)
flags.DEFINE_float("dropout", _D.net["dropout"], "Dropout before the feature layer.",
                   lower_bound=0, upper_bound=0.99)
flags.DEFINE_integer("epochs", _D.epochs, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("batch_size", _D.batch_size, "Batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", _D.learning_rate, "Peak Adam learning rate.", lower_bound=0)
flags.DEFINE_integer("seed", _D.seed, "Seed of the initialisation, shuffling and augmentation.")
flags.mark_flag_as_required("out_dir")
flags.register_validator("channels", lambda v: bool(v) and all(s.strip().isdigit() for s in v),
                         message="--channels must be a comma-separated list of positive integers")


def main(argv):
    if len(argv) > 1:
        raise cli.UsageError(f"unexpected arguments {argv[1:]}; all options are --flags")
    cfg = classifier.ClassifierConfig(
        dataset=FLAGS.dataset,
        net=dict(channels=[int(c) for c in FLAGS.channels], feature_dim=FLAGS.feature_dim,
                 dropout=FLAGS.dropout),
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        seed=FLAGS.seed)
    meta = classifier.train(cfg, FLAGS.out_dir)
    print(f"held-out accuracy {meta['heldout_accuracy']:.4f}; written to {FLAGS.out_dir}")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
