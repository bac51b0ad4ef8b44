"""Shared plumbing for the absl binaries in bin/: quiet start-up, one-line errors, exit codes,
--help, and flags generated from settings dataclasses (ddss_tf.settings), so a flag's name,
default, accepted values and help are the field's:

    cli.define_flags(SearchConfig, exclude=("guidance_scale",))   # module level
    cli.define_model_flags()    # models.ModelSpec: --model --schedule --num_timesteps ...
    cli.define_data_flags()     # data.DataSpec: --dataset --split
    ...
    cfg = SearchConfig(**cli.flag_settings(SearchConfig, exclude=(...)))   # in main()
    den, net = models.load_denoiser(**cli.model_options())

Every float flag of every binary refuses NaN and +-Infinity when the flags are parsed.

Exit codes of every binary (README: "Exit codes and faults"):

    0    finished
    1    an unexpected error (a bug: the traceback is printed)
    2    bad input: a flag, a file, a path that cannot be read or written, a busy work
         directory, settings that do not fit in memory
    3    a numerical failure: a non-finite loss, gradient, sample, coefficient or score (nothing
         broken is written; a search keeps its last good checkpoint)
    4    a multi-worker run lost a worker or timed out waiting for one
    137  a multi-worker run whose cluster did not form in time (killed by its watchdog)
    129  stopped by SIGHUP (a closed terminal, a batch system)
    130  stopped by SIGINT (Ctrl-C)
    143  stopped by SIGTERM (a scheduler's preemption, kill)
         A signal stops a training loop after saving a checkpoint and any other phase
         (ddss_tf.interrupt.phase) leaving nothing half-written; one line names the phase;
         rerun the same command to resume.
A full disk (or quota) is exit 2 naming the path being written (before the out-of-memory
mapping: TensorFlow reports both as ResourceExhaustedError).
"""

import errno
import os
import re
import signal
import sys
import tempfile
import threading

__all__ = ["run", "UsageError", "define_flags", "flag_settings", "define_model_flags",
           "model_options", "define_data_flags", "data_options", "EXIT_CODES"]

EXIT_CODES = dict(finished=0, error=1, bad_input=2, numerical=3, worker_lost=4,
                  sighup=129, sigint=130, cluster_never_formed=137, sigterm=143)

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


def _prog():
    return os.path.basename(sys.argv[0]).removesuffix(".py")


def _stop_while_starting(signum, frame):
    """SIGTERM / SIGHUP / SIGINT while a binary imports TensorFlow and its modules (before
    `run` installs interrupt's handlers): nothing is written yet, so end at once, in one line."""
    name = signal.Signals(signum).name
    os.write(2, f"{_prog()}: stopped: stopped by {name} while starting: nothing was written; "
                "rerun the command\n".encode())
    os._exit(128 + signum)


def _catch_signals_while_starting():
    """Install _stop_while_starting in a binary (bin/ddss_*.py, the ddss_* console scripts),
    not in a program that imports this module as a library."""
    from ddss_tf import interrupt

    if not _prog().startswith("ddss_") or threading.current_thread() is not \
            threading.main_thread():
        return
    for s in interrupt.SIGNALS:
        signal.signal(s, _stop_while_starting)
    interrupt.inject("start-up")  # the tests' fault-injection hook (DDSS_TF_SIGNAL_AT)


_catch_signals_while_starting()
_import_tensorflow_quietly()


class UsageError(ValueError):
    """A bad flag or input, reported as one line without a traceback (exit code 2)."""


def _one_line(e):
    return " ".join(str(e).split())


_DISK_FULL = ("No space left on device", "Disk quota exceeded")
_PATH = re.compile(r"(/[^\s;:'\"\]\[(){}]+)")


def _disk_full(e):
    """(True, the path being written or None) when `e` or an exception it was raised from is
    ENOSPC / EDQUOT (an OSError, h5py's OSError without errno, TensorFlow's
    ResourceExhaustedError from SaveV2 or a file write), else (False, None)."""
    import tensorflow as tf

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text = e.message if isinstance(e, tf.errors.OpError) else str(e)
        full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
        if full and e.filename is not None:
            return True, _final_path(str(e.filename))
        if full or isinstance(e, (OSError, tf.errors.OpError)) and any(
                s in text for s in _DISK_FULL):
            found = _PATH.search(text.split(";")[0] if ";" in text else text)
            return True, found and _final_path(found.group(1))
        e = e.__cause__ or e.__context__
    return False, None


def _final_path(path):
    """The path a temporary file or directory stands for: TensorFlow writes "<file>.tempstate<n>"
    and "<file>.tmp<hex>" and renames them, files.atomic_dir writes in a ".tmp-<random>"
    sibling of the directory it makes."""
    from ddss_tf import files

    path = re.sub(r"\.(tempstate\d+|tmp[0-9a-f]{32})$", "", path)
    parts = [p for p in path.split("/") if not p.startswith(files.TMP_PREFIX)]
    return "/".join(parts)


def _exit_code(e):
    """(exit code, message) for an exception a binary reports in one line, or None."""
    import tensorflow as tf

    from ddss_tf import interrupt

    if isinstance(e, interrupt.Interrupted):
        return e.exit_code, _one_line(e)
    if isinstance(e, KeyboardInterrupt):  # interrupt.Signalled, or Python's own for SIGINT
        name = getattr(e, "signal_name", "SIGINT")
        return (getattr(e, "exit_code", EXIT_CODES["sigint"]),
                interrupt.stop_message(name, getattr(e, "phases", ())))
    full, path = _disk_full(e)
    if full:
        where = f"writing {path}" if path else f"({_one_line(e)[:200]})"
        return EXIT_CODES["bad_input"], (f"the disk is full (or over quota) {where}: nothing "
                                         "half-written was kept; free space (or raise the "
                                         "quota) and rerun the same command")
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


def _parse_flags(argv):
    """absl's flag parsing, with a bad flag as one line and exit code 2 (absl: 1)."""
    from absl import app, flags

    if any(a in ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?") for a in argv[1:]):
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)  # absl: exit code 1
    try:
        argv = flags.FLAGS(argv)
        _check_finite(flags.FLAGS)
        return argv
    except flags.Error as e:
        print(f"{_prog()}: error: {_one_line(e)} (--help lists the flags)", file=sys.stderr)
        sys.exit(EXIT_CODES["bad_input"])


def _check_finite(fv):
    """flags.IllegalFlagValueError naming the first float flag set to NaN or +-Infinity (absl
    parses them as floats, and a bound such as lower_bound=0 lets NaN through)."""
    import math

    from absl import flags

    for name in fv:
        flag = fv[name]
        if isinstance(flag.parser, flags.FloatParser) and flag.value is not None \
                and not math.isfinite(flag.value):
            raise flags.IllegalFlagValueError(
                f"flag --{name}={flag.value}: must be a finite number (NaN and Infinity are "
                "refused)")


def run(main):
    """absl.app.run(main): a bad flag or input, a numerical failure, an unusable path or an
    interruption becomes one line on stderr and the exit code of the module docstring."""
    from absl import app

    from ddss_tf import interrupt

    _adopt_binary_flags(main)

    def guarded(argv):
        from absl import flags, logging

        if not flags.FLAGS["verbosity"].present:  # TF's INFO lines (checkpoint sharding, ...)
            logging.set_verbosity(logging.WARNING)
        try:
            with interrupt.phase("the set-up"):  # the binary's own phases nest inside
                return main(argv)
        except (Exception, KeyboardInterrupt) as e:
            _report(e)

    # SIGINT, SIGTERM and SIGHUP raise interrupt.Signalled wherever the binary is (a training
    # loop turns them into its own clean stop), so each ends in one line and 128 + its number.
    with interrupt.handlers():
        try:
            app.run(guarded, flags_parser=_parse_flags)
        except KeyboardInterrupt as e:  # while absl parsed the flags
            _report(e)


def _report(e):
    """Print the one line of `e` and exit with its code; re-raise a bug (exit 1, traceback)."""
    found = _exit_code(e)
    if found is None:
        raise e
    code, msg = found
    kind = "stopped" if code >= 128 else "error"
    print(f"{_prog()}: {kind}: {msg}", file=sys.stderr)
    sys.exit(code)


def _flag_values(flag_values):
    from absl import flags

    return flags.FLAGS if flag_values is None else flag_values


def _binary_module(depth=2):
    """The module that called define_*_flags, named as absl names the module of a flag (the
    main script by sys.argv[0]), so that its --help lists the shared flags as its own."""
    name = sys._getframe(depth).f_globals.get("__name__", "")
    return sys.argv[0] if name == "__main__" else name


def define_flags(cls, names=None, exclude=(), flag_values=None, module=None):
    """Define a flag per setting of the dataclass `cls` (ddss_tf.settings): bool, int, float,
    str (an enum when the setting lists its choices) and list settings; `names` (default:
    all) minus `exclude`. A setting whose default is resolved later (None), or a string
    whose default ("") is not a choice, gets a flag without a default (None)."""
    from absl import flags

    from ddss_tf import settings

    fv, module = _flag_values(flag_values), module or _binary_module()
    for s in settings.describe(cls, names):
        if s.name in exclude:
            continue
        kw = dict(flag_values=fv, module_name=module)
        bounds = {k: v for k, v in (("lower_bound", s.lower), ("upper_bound", s.upper))
                  if v is not None}
        default = s.default
        if s.type is bool:
            flags.DEFINE_boolean(s.name, default, s.help, **kw)
        elif s.type is int:
            flags.DEFINE_integer(s.name, default, s.help, **bounds, **kw)
        elif s.type is float:
            flags.DEFINE_float(s.name, default, s.help, **bounds, **kw)
        elif s.type is str and s.choices:
            flags.DEFINE_enum(s.name, default if default in s.choices else None,
                              list(s.choices), s.help, **kw)
        elif s.type is str:
            flags.DEFINE_string(s.name, default, s.help, **kw)
        elif s.type is list:
            flags.DEFINE_list(s.name, list(default) if default else None, s.help, **kw)
        else:
            raise TypeError(f"setting {cls.__name__}.{s.name} has no flag type; define its "
                            "flag by hand and exclude it")


def flag_settings(cls, names=None, exclude=(), flag_values=None):
    """{name: value} of `define_flags`' flags, a flag without a value (None) read as the
    setting's default."""
    from ddss_tf import settings

    fv = _flag_values(flag_values)
    out = {}
    for s in settings.describe(cls, names):
        if s.name in exclude:
            continue
        value = fv[s.name].value
        out[s.name] = s.default if value is None else value
    return out


def define_model_flags(flag_values=None):
    """Define the flags of models.ModelSpec: --model, --schedule, --num_timesteps,
    --prediction, --model_preset, --image_size and --ema."""
    from ddss_tf import models

    define_flags(models.ModelSpec, flag_values=flag_values, module=_binary_module())


def model_options(flag_values=None):
    """{model, schedule, num_timesteps, prediction, model_preset, image_size, ema} from the
    flags of `define_model_flags`: models.load's keyword arguments and SearchConfig fields.
    Raises UsageError for --num_timesteps without a schedule name."""
    from ddss_tf import models, schedules

    fv = _flag_values(flag_values)
    if fv["num_timesteps"].present and fv["schedule"].value not in schedules.names():
        raise UsageError(f"--num_timesteps applies with --schedule={'|'.join(schedules.names())} "
                         "only (a schedule .json file names its own num_timesteps)")
    return flag_settings(models.ModelSpec, flag_values=fv)


def define_data_flags(flag_values=None):
    """Define the flags of data.DataSpec: --dataset and --split."""
    from ddss_tf import data

    define_flags(data.DataSpec, flag_values=flag_values, module=_binary_module())


def data_options(flag_values=None):
    """{dataset, split} from the flags of `define_data_flags` (SearchConfig fields)."""
    from ddss_tf import data

    return flag_settings(data.DataSpec, flag_values=flag_values)
