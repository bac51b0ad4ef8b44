"""Shared plumbing for the absl binaries in bin/: quiet TF logs, one-line errors, and the
flags every binary that loads a model or real data defines the same way:

    cli.define_model_flags()    # --model --schedule --num_timesteps --prediction, and for TF1
                                # checkpoints --model_preset --image_size --ema (module level)
    cli.define_data_flags()     # --dataset --split
    ...
    cfg = SearchConfig(**cli.model_options(), **cli.data_options(), ...)   # in main()
    den, net = components.load_denoiser(**cli.model_options())
"""

import os
import sys

__all__ = ["run", "UsageError", "define_model_flags", "model_options", "define_data_flags",
           "data_options", "DATA_DEFAULTS"]

DATA_DEFAULTS = dict(dataset="digits", split="train")  # = SearchConfig's

# TensorFlow's C++ start-up chatter hides the one line a user needs; keep warnings and errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class UsageError(ValueError):
    """A bad flag or input, reported as one line without a traceback."""


def run(main):
    """absl.app.run(main), turning ValueError / FileNotFoundError into one line and exit code 2."""
    from absl import app

    def guarded(argv):
        from absl import flags, logging

        if not flags.FLAGS["verbosity"].present:  # TF's INFO lines (checkpoint sharding, ...)
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except (ValueError, FileNotFoundError, FloatingPointError) as e:
            prog = os.path.basename(sys.argv[0]).removesuffix(".py")
            msg = " ".join(str(e).split())
            print(f"{prog}: error: {msg}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)


def _flag_values(flag_values):
    from absl import flags

    return flags.FLAGS if flag_values is None else flag_values


def _binary_module():
    """The module that called define_*_flags, named as absl names the module of a flag (the
    main script by sys.argv[0]), so that its --help lists the shared flags as its own."""
    name = sys._getframe(2).f_globals.get("__name__", "")
    return sys.argv[0] if name == "__main__" else name


def define_model_flags(flag_values=None):
    """Define --model, --schedule, --num_timesteps, --prediction, --model_preset, --image_size
    and --ema (see ddss_tf.models)."""
    from absl import flags

    from ddss_tf import denoisers, models, schedules
    from ddss_tf.nets import diffusion_tf

    fv, d, module = _flag_values(flag_values), models.DEFAULTS, _binary_module()
    names = "|".join(schedules.names())
    flags.DEFINE_string(
        "model", d["model"], "'digits' (the bundled DDPM), a ddss_train_model directory, a Keras "
        "file (.keras / .h5), a SavedModel directory: model([x_t [B,H,W,C], t [B]]) -> "
        "eps | x | v (README: the model contract), or a TF1 checkpoint of Ho et al.'s "
        "diffusion_tf UNet (prefix .../model.ckpt-N or its directory; with --image_size or "
        "--model_preset).", flag_values=fv, module_name=module)
    flags.DEFINE_string(
        "schedule", d["schedule"], f"Noise schedule of a Keras / SavedModel model: {names} (with "
        "--num_timesteps) or a .json file holding Schedule.get_config(). Empty: the model's own "
        "(digits and ddss_train_model directories carry theirs).", flag_values=fv,
        module_name=module)
    flags.DEFINE_integer("num_timesteps", d["num_timesteps"], f"T of --schedule={names}.",
                         lower_bound=2, flag_values=fv, module_name=module)
    flags.DEFINE_enum("prediction", d["prediction"], list(denoisers.predictions()),
                      "What the model returns: eps, x (= x0) or v.", flag_values=fv,
                      module_name=module)
    flags.DEFINE_enum(
        "model_preset", d["model_preset"] or None, list(diffusion_tf.preset_names()),
        "A released diffusion_tf model (Ho et al.) for a TF1 checkpoint --model: fixes its image "
        "size and schedule (cifar10: 32x32, linear betas 1e-4..0.02, T = 1000; the others 256x256).",
        flag_values=fv, module_name=module)
    flags.DEFINE_integer("image_size", d["image_size"], "S for S x S images: the input size of a "
                         "TF1 checkpoint --model (it records none); 0: from --model_preset.",
                         lower_bound=0, flag_values=fv, module_name=module)
    flags.DEFINE_boolean("ema", d["ema"], "A TF1 checkpoint --model: its EMA weights (the ones "
                         "Ho et al. evaluate); --noema: the raw weights.", flag_values=fv,
                         module_name=module)


def model_options(flag_values=None):
    """{model, schedule, num_timesteps, prediction} from the flags of `define_model_flags`:
    keyword arguments of models.load / components.load_denoiser and SearchConfig fields.
    Raises UsageError for --num_timesteps without a schedule name."""
    from ddss_tf import models, schedules

    fv = _flag_values(flag_values)
    if fv["num_timesteps"].present and fv["schedule"].value not in schedules.names():
        raise UsageError(f"--num_timesteps applies with --schedule={'|'.join(schedules.names())} "
                         "only (a schedule .json file names its own num_timesteps)")
    options = {name: fv[name].value for name in models.OPTIONS}
    options["model_preset"] = options["model_preset"] or ""
    return options


def define_data_flags(flag_values=None):
    """Define --dataset and --split (see ddss_tf.data)."""
    from absl import flags

    fv, module = _flag_values(flag_values), _binary_module()
    flags.DEFINE_string(
        "dataset", DATA_DEFAULTS["dataset"], "Real data the model was trained on: digits "
        "(bundled), a tensorflow-datasets name (e.g. cifar10; the tfds extra and a prepared "
        "copy), a folder of PNG/JPEG images or an .npz file (array 'images', 'x' or its only "
        "one); fitted to the model's image shape.", flag_values=fv, module_name=module)
    flags.DEFINE_string(
        "split", DATA_DEFAULTS["split"], "Split: train|heldout|all for digits, a tfds split "
        "(train, test, train[:10%]), an image folder's subfolder (train / all = every image), "
        "train / all for an .npz.", flag_values=fv, module_name=module)


def data_options(flag_values=None):
    """{dataset, split} from the flags of `define_data_flags` (SearchConfig fields)."""
    fv = _flag_values(flag_values)
    return {name: fv[name].value for name in DATA_DEFAULTS}
