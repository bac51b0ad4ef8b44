"""Shared plumbing for the absl binaries in bin/: quiet start-up, one-line errors, exit codes,
--help, and the flags every binary that loads a model or real data defines the same way:

    cli.define_model_flags()    # --model --schedule --num_timesteps --prediction, and for TF1
                                # checkpoints --model_preset --image_size --ema (module level)
    cli.define_data_flags()     # --dataset --split
    ...
    cfg = SearchConfig(**cli.model_options(), **cli.data_options(), ...)   # in main()
    den, net = components.load_denoiser(**cli.model_options())

Exit codes of every binary (README: "Exit codes and faults"):

    0    finished
    1    an unexpected error (a bug: the traceback is printed)
    2    bad input: a flag, a file, a path that cannot be read or written, a busy work
         directory, settings that do not fit in memory
    3    a numerical failure: a non-finite loss, gradient, sample, coefficient or score (nothing
         broken is written; a search keeps its last good checkpoint)
    4    a multi-worker run lost a worker or timed out waiting for one
    137  a multi-worker run whose cluster did not form in time (killed by its watchdog)
    130  stopped by SIGINT (Ctrl-C) after saving a checkpoint; rerun to resume
    143  stopped by SIGTERM after saving a checkpoint; rerun to resume
"""

import os
import sys
import tempfile

__all__ = ["run", "UsageError", "define_model_flags", "model_options", "define_data_flags",
           "data_options", "DATA_DEFAULTS", "EXIT_CODES"]

DATA_DEFAULTS = dict(dataset="digits", split="train")  # = SearchConfig's

EXIT_CODES = dict(finished=0, error=1, bad_input=2, numerical=3, worker_lost=4,
                  sigint=130, cluster_never_formed=137, sigterm=143)

# TensorFlow's C++ start-up chatter hides the one line a user needs; keep warnings and errors.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Lines TensorFlow's native code prints while it loads, before any log level applies
# (DDSS_TF_STARTUP_LOGS=1 shows everything, e.g. to debug an import that crashes).
_STARTUP_NOISE = ("All log messages before absl::InitializeLog() is called",
                  "oneDNN custom operations are on",
                  "This TensorFlow binary is optimized to use available CPU instructions",
                  "To enable the following instructions",
                  "Unable to register cuDNN factory", "Unable to register cuFFT factory",
                  "Unable to register cuBLAS factory", "TF-TRT Warning",
                  "computation placer already registered")


def _import_tensorflow_quietly():
    """Import TensorFlow with file descriptor 2 captured, then pass on what was not start-up
    noise. The oneDNN notice and absl's InitializeLog warning are written by native code
    before TF_CPP_MIN_LOG_LEVEL is read, so no setting hides them."""
    if "tensorflow" in sys.modules or os.environ.get("DDSS_TF_STARTUP_LOGS"):
        return
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (a notebook, a test runner)
        return
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), stderr_fd)
        try:
            import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, stderr_fd)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(True)
                    if not any(noise in line for noise in _STARTUP_NOISE)]
            sys.stderr.write("".join(kept))


_import_tensorflow_quietly()


class UsageError(ValueError):
    """A bad flag or input, reported as one line without a traceback (exit code 2)."""


def _one_line(e):
    return " ".join(str(e).split())


def _exit_code(e):
    """(exit code, message) for an exception a binary reports in one line, or None."""
    import tensorflow as tf

    from ddss_tf import interrupt

    if isinstance(e, interrupt.Interrupted):
        return e.exit_code, _one_line(e)
    if isinstance(e, KeyboardInterrupt):
        return EXIT_CODES["sigint"], ("interrupted (SIGINT) outside a training loop: what was "
                                      "finished is kept, rerun the same command to go on")
    if isinstance(e, FloatingPointError):
        return EXIT_CODES["numerical"], _one_line(e)
    if isinstance(e, (tf.errors.UnavailableError, tf.errors.AbortedError,
                      tf.errors.DeadlineExceededError, tf.errors.CancelledError)):
        first = _one_line(str(e.message).splitlines()[0] if e.message else type(e).__name__)
        return EXIT_CODES["worker_lost"], (
            f"a remote or collective operation failed ({first[:200]}): with "
            "--strategy=multi_worker, lost contact with another worker of the cluster; restart "
            "every worker with the same command to resume from the last checkpoint")
    if isinstance(e, tf.errors.ResourceExhaustedError):
        return EXIT_CODES["bad_input"], (
            f"out of memory ({_one_line(e.message)[:200]}); lower --batch_size (or the sample "
            "counts) or use a device with more memory")
    if isinstance(e, OSError):  # a path that cannot be read or written: name it and why
        if e.filename is not None:
            return EXIT_CODES["bad_input"], f"cannot use {e.filename}: {e.strerror}"
        return EXIT_CODES["bad_input"], _one_line(e)
    if isinstance(e, (tf.errors.PermissionDeniedError, tf.errors.NotFoundError,
                      tf.errors.FailedPreconditionError, tf.errors.DataLossError)):
        return EXIT_CODES["bad_input"], _one_line(e.message)
    if isinstance(e, ValueError):
        return EXIT_CODES["bad_input"], _one_line(e)
    return None


def _adopt_binary_flags(main):
    """Make --help list the binary's own flags and its docstring as the usage.

    absl's --help shows the flags of the module named sys.argv[0], i.e. of a script run as
    __main__. An installed console script runs `main` from an imported module instead, so
    its flags are re-registered under sys.argv[0] and its docstring becomes __main__'s."""
    from absl import flags

    name = getattr(main, "__module__", "__main__")
    if name == "__main__" or name not in sys.modules:
        return
    fv = flags.FLAGS
    for flag in fv.flags_by_module_dict().get(name, []):
        fv.register_flag_by_module(sys.argv[0], flag)
    main_module = sys.modules.get("__main__")
    if main_module is not None and not main_module.__doc__:
        main_module.__doc__ = sys.modules[name].__doc__


def _prog():
    return os.path.basename(sys.argv[0]).removesuffix(".py")


def _parse_flags(argv):
    """absl's flag parsing, with a bad flag as one line and exit code 2 (absl: 1)."""
    from absl import app, flags

    if any(a in ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?") for a in argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)  # absl: exit code 1
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"{_prog()}: error: {_one_line(e)} (--help lists the flags)", file=sys.stderr)
        sys.exit(EXIT_CODES["bad_input"])


def run(main):
    """absl.app.run(main): a bad flag or input, a numerical failure, an unusable path or an
    interruption becomes one line on stderr and the exit code of the module docstring."""
    from absl import app

    _adopt_binary_flags(main)

    def guarded(argv):
        from absl import flags, logging

        if not flags.FLAGS["verbosity"].present:  # TF's INFO lines (checkpoint sharding, ...)
            logging.set_verbosity(logging.WARNING)
        try:
            return main(argv)
        except (Exception, KeyboardInterrupt) as e:
            found = _exit_code(e)
            if found is None:
                raise
            code, msg = found
            kind = "stopped" if code >= 128 else "error"
            print(f"{_prog()}: {kind}: {msg}", file=sys.stderr)
            sys.exit(code)

    app.run(guarded, flags_parser=_parse_flags)


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
        "model", d["model"], "'digits' (the bundled DDPM), 'digits_cond' (the bundled "
        "class-conditional one), a ddss_train_model directory, a Keras file (.keras / .h5), a "
        "SavedModel directory: model([x_t [B,H,W,C], t [B]]) -> "
        "eps | x | v (README: the model contract), or a TF1 checkpoint of Ho et al.'s "
        "diffusion_tf UNet (prefix .../model.ckpt-N or its directory; with --image_size or "
        "--model_preset).", flag_values=fv, module_name=module)
    flags.DEFINE_string(
        "schedule", d["schedule"], f"Noise schedule of a Keras / SavedModel model: {names} (with "
        "--num_timesteps) or a .json file holding Schedule.get_config(). Empty: the model's own "
        "(digits and ddss_train_model directories carry theirs).", flag_values=fv,
        module_name=module)
    flags.DEFINE_integer("num_timesteps", d["num_timesteps"], f"T of --schedule={names}.",
                         lower_bound=2, upper_bound=schedules.MAX_TIMESTEPS, flag_values=fv,
                         module_name=module)
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
