"""Turn SIGINT / SIGTERM into a flag that a training loop checks between steps.

    with interrupt.Catch() as stop:
        for step in ...:
            ...
            if stop:            # a signal arrived: save a checkpoint and leave cleanly
                break
    if stop:
        raise interrupt.Interrupted(stop.received, "stopped at step 7; checkpoint saved")

A second signal of the same kind falls through to the default handler, so a
stuck process can still be killed. A run that stopped early raises `Interrupted`
rather than returning, so no caller can take an unfinished run for a finished one;
the binaries exit with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM),
as shells report a process killed by that signal.
"""

import signal
import threading

__all__ = ["Catch", "Interrupted"]


class Interrupted(Exception):
    """A run stopped by a signal after saving its checkpoint: rerun the same command to resume.

    Attributes: signal_name ("SIGINT", "SIGTERM"), exit_code (128 + the signal's number).
    """

    def __init__(self, signal_name, message):
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_code = 128 + int(getattr(signal.Signals, signal_name, signal.SIGINT))


class Catch:
    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
        self.signals = signals
        self.received = None
        self._previous = {}

    def __bool__(self):
        return self.received is not None

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False
