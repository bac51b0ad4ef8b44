"""A small progress bar for long loops: step, metrics, steps/s and ETA.

On a terminal it redraws one line; in a log file (nohup, CI) it prints a line
every `log_every_seconds` so the log stays readable.
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
    """Progress(total, initial=0, desc="train"); update(step, loss=...); close()."""

    def __init__(self, total, initial=0, desc="", stream=None, width=24, log_every_seconds=10.0):
        self.total, self.desc, self.width = int(total), desc, width
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.log_every = 0.2 if self.tty else log_every_seconds
        self._start_step, self._start = int(initial), time.monotonic()
        self._last_print = -float("inf")
        self.step = int(initial)

    def rate(self):
        """Steps per second since this bar started."""
        elapsed = time.monotonic() - self._start
        done = self.step - self._start_step
        return done / elapsed if elapsed > 0 and done > 0 else 0.0

    def update(self, step, force=False, **metrics):
        self.step = int(step)
        now = time.monotonic()
        if not force and now - self._last_print < self.log_every and self.step < self.total:
            return
        self._last_print = now
        rate = self.rate()
        eta = (self.total - self.step) / rate if rate > 0 else float("nan")
        filled = int(self.width * self.step / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        parts = [f"{self.desc} {self.step}/{self.total} [{bar}]"]
        parts += [f"{k}={_fmt(v)}" for k, v in metrics.items()]
        parts.append(f"{rate:.2f} steps/s" if rate >= 0.1 else f"{1 / rate if rate else float('nan'):.1f} s/step")
        parts.append(f"ETA {format_seconds(eta) if eta == eta else '?'}")
        line = " ".join(parts)
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

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
