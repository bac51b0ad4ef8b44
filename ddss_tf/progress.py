"""A small progress bar for long loops: step, metrics, steps/s and ETA.

On a terminal it redraws one line; in a log file (nohup, CI) it prints a line
every `log_every_seconds` so the log stays readable.

The first step of a compiled loop is mostly tracing and XLA compilation, so the rate
and the ETA count from the end of the first update on; `first="compiling"` prints a
line saying so before it starts.
"""

import sys
import time

__all__ = ["Progress", "format_seconds"]


def format_seconds(seconds):
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Progress(total, initial=0, desc="train", first="compiling"); update(step, loss=...);
    close()."""

    def __init__(self, total, initial=0, desc="", stream=None, width=24, log_every_seconds=10.0,
                 first=None):
        self.total, self.desc, self.width = int(total), desc, width
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = 0.2 if self.tty else log_every_seconds
        self._start = time.monotonic()
        self._rate_step, self._rate_start = None, None  # set by the first update
        self._last_print = -float("inf")
        self.step = int(initial)
        if first and self.step < self.total:
            self._write(f"{self._bar_text()} {first} (step {self.step + 1}) ...")

    def rate(self):
        """Steps per second after the first update (which includes compiling)."""
        if self._rate_start is None:
            return 0.0
        elapsed = time.monotonic() - self._rate_start
        done = self.step - self._rate_step
        return done / elapsed if elapsed > 0 and done > 0 else 0.0

    def _bar_text(self):
        filled = int(self.width * self.step / max(self.total, 1))
        return f"{self.desc} {self.step}/{self.total} [{'#' * filled}{'.' * (self.width - filled)}]"

    def _write(self, line):
        self.stream.write(("\r" + line + "\033[K") if self.tty else (line + "\n"))
        self.stream.flush()

    def update(self, step, force=False, **metrics):
        self.step = int(step)
        now = time.monotonic()
        if self._rate_start is None:
            self._rate_step, self._rate_start = self.step, now
        if not force and now - self._last_print < self.log_every and self.step < self.total:
            return
        self._last_print = now
        rate = self.rate()
        eta = (self.total - self.step) / rate if rate > 0 else float("nan")
        parts = [self._bar_text()] + [f"{k}={_fmt(v)}" for k, v in metrics.items()]
        if rate > 0:
            parts.append(f"{rate:.2f} steps/s" if rate >= 0.1 else f"{1 / rate:.1f} s/step")
        parts.append(f"ETA {format_seconds(eta) if eta == eta else '?'}")
        self._write(" ".join(parts))

    def close(self, **metrics):
        self.update(self.step, force=True, **metrics)
        if self.tty:
            self.stream.write("\n")
        elapsed = time.monotonic() - self._start
        self.stream.write(f"{self.desc} done in {format_seconds(elapsed)}\n")
        self.stream.flush()


def _fmt(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{v:.4g}"
