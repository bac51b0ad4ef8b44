"""Shared by the search tests: a tiny search config, a SIGINT at a chosen step, values."""

import os
import signal

import numpy as np

from ddss_tf import progress
from ddss_tf.search import SearchConfig

QUIET = lambda *a: None  # noqa: E731


def tiny_config(**kw):
    """A search on the bundled model small enough for a unit test (K = 2, batch 8, 3 steps)."""
    base = dict(num_steps=2, batch_size=8, train_steps=3, learning_rate=1e-2, xla=False,
                checkpoint_every=1, eval_every=1000, eval_samples=16, final_samples=16,
                reference_steps=10)
    base.update(kw)
    return SearchConfig(**base)


def values(variables):
    return [np.array(v.numpy()) for v in variables]


def sigint_at(monkeypatch, at_step):
    """Send this process a real SIGINT once the progress bar reaches at_step."""
    original = progress.Progress.update
    sent = []

    def update(self, step, force=False, **metrics):
        original(self, step, force, **metrics)
        if step == at_step and not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGINT)  # the real handler: checkpoint, clean return

    monkeypatch.setattr(progress.Progress, "update", update)
    return sent
