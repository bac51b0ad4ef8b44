"""Signals: a clean stop between two training steps, and one line naming where any other phase
stopped.

Inside a training loop a signal becomes a flag that the loop checks between steps:

    with interrupt.Catch() as stop:
        for step in ...:
            ...
            if stop:            # a signal arrived: save a checkpoint and leave cleanly
                break
    if stop:
        raise interrupt.Interrupted(stop.received, "stopped at step 7; checkpoint saved")

Everywhere else (a binary's set-up, the reference statistics, the baselines, the final
comparison, the export, a benchmark cell, ddss_sample's sampling), the handlers that
`handlers()` installs (the binaries do, in cli.run) raise `Signalled`, a KeyboardInterrupt
carrying the signal, so the phase that runs unwinds through its `finally` blocks and atomic
writers (nothing half-written stays) and the binary prints one line:

    with interrupt.phase("the final comparison"):
        ...                     # SIGTERM here: "stopped by SIGTERM during the final comparison:
                                # what was finished is kept; rerun the same command to resume"

Signals: SIGINT (Ctrl-C), SIGTERM (a scheduler's preemption, `kill`) and SIGHUP (a closed
terminal, a batch system). A run that stopped raises (`Interrupted` or `Signalled`) rather than
returning, so no caller can take an unfinished run for a finished one; the binaries exit with
128 + the signal's number (130 SIGINT, 143 SIGTERM, 129 SIGHUP), as shells report a process
killed by that signal. A second signal of the same kind while the first is being handled falls
through to the handler outside (the binaries': raise at once, which skips the loop's last
checkpoint; Python's default for SIGINT; the system's default, which ends the process, for
the others), so a stuck process can still be stopped.

Fault injection (tests): DDSS_TF_SIGNAL_AT="<phase>:<SIGNAL>" makes the process send itself
SIGNAL as it enters the first phase whose name starts with <phase> (e.g. "the final
comparison:SIGTERM", "the cell DDIM:SIGHUP"; "start-up": while a binary imports TensorFlow,
before its handlers are installed), so every phase's stop can be tested with the real binaries
at a known point.
"""

import contextlib
import os
import signal
import threading

__all__ = ["Catch", "Interrupted", "Signalled", "SIGNALS", "handlers", "phase", "current",
           "stop_message", "inject", "RERUN", "SIGNAL_AT"]

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
                if s is not None)
RERUN = "what was finished is kept; rerun the same command to resume"
SIGNAL_AT = "DDSS_TF_SIGNAL_AT"


def _exit_code(signal_name):
    return 128 + int(getattr(signal.Signals, signal_name, signal.SIGINT))


class Interrupted(Exception):
    """A run stopped by a signal after saving its checkpoint: rerun the same command to resume.

    Attributes: signal_name ("SIGINT", "SIGTERM", "SIGHUP"), exit_code (128 + its number).
    """

    def __init__(self, signal_name, message):
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_code = _exit_code(signal_name)


class Signalled(KeyboardInterrupt):
    """Raised by the handlers of `handlers()` when a signal arrives outside a training loop.

    A KeyboardInterrupt (a BaseException: no `except Exception` swallows it), so whatever
    runs unwinds as it does on Ctrl-C. Attributes: signal_name, exit_code (128 + the signal's
    number), phases (the `phase` stack, outermost first, when the signal arrived).
    """

    def __init__(self, signal_name, phases=()):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.exit_code = _exit_code(signal_name)
        self.phases = tuple(phases)


# ---- phases ----------------------------------------------------------------------------------

class _Phase:
    def __init__(self, name, rerun, context):
        self.name, self.rerun, self.context = name, rerun, context


_stack = []  # the main thread's phases, outermost first


def current():
    """The phases running now (outermost first): what a signal's line names."""
    return tuple(_stack)


@contextlib.contextmanager
def phase(name, rerun=None, context=False):
    """Name what the process is doing, for the line a signal prints ("during <name>").

    rerun: what a rerun of the same command does after a stop here (default RERUN).
    context: an enclosing phase worth naming beside the innermost one (a benchmark cell,
    the search it runs): the line reads "during <innermost> (<context>, ...)".
    Phases nest; only the main thread's are recorded (signals are handled there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    entry = _Phase(name, rerun, context)
    _stack.append(entry)
    try:
        inject(name)
        yield
    except KeyboardInterrupt as e:  # Python's own SIGINT handler records no phase
        if not getattr(e, "phases", None):
            e.phases = tuple(_stack)
        raise
    finally:
        _stack.remove(entry)


def inject(name):
    """DDSS_TF_SIGNAL_AT="<phase>:<SIGNAL>": signal this process as it enters the phase `name`
    when it starts with <phase> (cli calls it with "start-up" while a binary imports)."""
    spec = os.environ.get(SIGNAL_AT, "")
    where, _, which = spec.rpartition(":")
    if where and name.startswith(where):
        os.kill(os.getpid(), getattr(signal.Signals, which))


def stop_message(signal_name, phases):
    """The one line of a stop: "stopped by SIGTERM during <phase> (<context>): <rerun>"."""
    phases = list(phases)
    if not phases:
        return f"stopped by {signal_name} while starting: nothing was written; rerun the command"
    inner = phases[-1]
    context = [p.name for p in reversed(phases[:-1]) if p.context]
    rerun = next((p.rerun for p in reversed(phases) if p.rerun), RERUN)
    where = inner.name + (f" ({'; '.join(context)})" if context else "")
    return f"stopped by {signal_name} during {where}: {rerun}"


# ---- handlers --------------------------------------------------------------------------------

def _raise(signum, frame):
    name = signal.Signals(signum).name
    # A second signal of this kind while the first unwinds: the system's default (SIGINT:
    # Python's KeyboardInterrupt), so a process stuck in its clean-up can still be stopped.
    signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT
                  else signal.SIG_DFL)
    raise Signalled(name, _stack)


@contextlib.contextmanager
def handlers(signals=SIGNALS):
    """Install (main thread only) handlers that raise `Signalled` for `signals`; restore the
    previous ones on exit."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for s in signals:
            previous[s] = signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Catch:
    """A flag set by the first of `signals` (SIGINT, SIGTERM, SIGHUP) while the block runs;
    the handlers outside are restored on exit (and for a second signal of the same kind)."""

    def __init__(self, signals=SIGNALS):
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
