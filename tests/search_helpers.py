"""Shared by the search tests: a tiny search config, a SIGINT at a chosen step, values, a
search interrupted and resumed."""

import json
import os
import signal
import tempfile

import numpy as np
import pytest

from ddss_tf import interrupt, progress
from ddss_tf.search import SearchConfig, run_search

import toy_networks

QUIET = lambda *a: None  # noqa: E731


_TOY_MODEL = []


def toy_model():
    """The path of a few-op Keras eps-model on 8 x 8 digits (toy_networks.search_eps_model),
    saved once per test process: searches on it run the whole pipeline at a fraction of the
    bundled UNet's cost (which pretrained_test and the benchmarks cover)."""
    if not _TOY_MODEL:
        path = os.path.join(tempfile.mkdtemp(prefix="ddss_toy_"), "eps.keras")
        toy_networks.search_eps_model().save(path)
        _TOY_MODEL.append(path)
    return _TOY_MODEL[0]


def tiny_config(**kw):
    """A search small enough for a unit test (K = 2, batch 8, 3 steps) on `toy_model()`
    with Ho et al.'s linear schedule: the KID objective from DDIM (no teacher pairs, no start
    screen) on the raw samples, keeping the best validation FID."""
    base = dict(model=toy_model(), schedule="linear_beta", num_steps=2, batch_size=8,
                train_steps=3, learning_rate=1e-2, xla=False, checkpoint_every=1,
                eval_every=1000, eval_samples=16, validation_samples=16, final_samples=16, reference_steps=10,
                objective="kid", init="ddim", select="best", clip_samples=False)
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


def full_and_resumed(cfg, directory, monkeypatch, at_step=2):
    """(results of `cfg` searched in one go, its coefficients.json variables, those of the same
    search stopped by a real SIGINT at at_step and resumed), in directory/full and /resumed."""
    full = run_search(cfg, os.path.join(directory, "full"), log=QUIET)
    sent = sigint_at(monkeypatch, at_step)
    with pytest.raises(interrupt.Interrupted):
        run_search(cfg, os.path.join(directory, "resumed"), log=QUIET)
    assert sent == [at_step]
    run_search(cfg, os.path.join(directory, "resumed"), log=QUIET)

    def coefficients(name):
        with open(os.path.join(directory, name, "coefficients.json")) as f:
            return json.load(f)["variables"]

    return full, coefficients("full"), coefficients("resumed")
