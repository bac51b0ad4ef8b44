"""Turn SIGINT / SIGTERM into a flag that a training loop checks between steps.

    with interrupt.Catch() as stop:
        for step in ...:
            ...
            if stop:            # a signal arrived: save a checkpoint and leave cleanly
                break

A second signal of the same kind falls through to the default handler, so a
stuck process can still be killed.
"""

import signal
import threading

__all__ = ["Catch"]


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
