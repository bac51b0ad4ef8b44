"""Shared plumbing for the absl binaries in bin/: quiet TF logs, one-line errors."""

import os
import sys

__all__ = ["run", "UsageError"]

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
