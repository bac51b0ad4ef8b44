"""What a search will do and roughly how long each phase will take, printed at its start.

Each phase is counted in network evaluations (forward passes of the diffusion network, the
unit of the cost records) and turned into minutes with the rate measured on this machine at
the start: a few forward passes of one evaluation batch. A training step's network evaluation
(forward, rematerialised forward and backward, in the training batch) costs TRAIN_COST
forward ones: each run's training loop against the rate its own plan measured, on the bundled
digits model on 2 CPU cores shared with one other search (K = 3 and 4, 2026-12-07: 1.8-2.9;
the loop's periodic evaluations and validations taken out at the forward rate). The load of
the machine moves both, so the training estimate is the roughest; the progress bar gives the
real rate once training runs.
"""

import math
import time

import numpy as np

from ddss_tf import evaluation
from ddss_tf.search import start as start_lib

__all__ = ["TRAIN_COST", "phases", "forward_rate", "lines"]

TRAIN_COST = 3.0


def phases(cfg, objective, screen=True, reference=True, schedule=None):
    """[(phase, network evaluations, training)] of the search `cfg` (resolved): screen /
    reference: whether the start's screen and the reference row still have to be computed
    (neither is, when cached); schedule: the model's, whose grids the screen tries and whose
    baselines the comparison scores (`start.candidates`, `evaluation.baselines_for`)."""
    k, out = cfg.num_steps, []
    if screen and cfg.init == start_lib.AUTO:
        n = len(start_lib.candidates(cfg.family, cfg.pred, cfg.stride, schedule))
        first = min(start_lib.SCREEN_SAMPLES, cfg.eval_samples)
        out.append(("start: screen of the training-free samplers",
                     k * (n * first + min(n, start_lib.MAX_FINALISTS) * cfg.eval_samples), False))
    if objective.network_evaluations(cfg):
        out.append(("teacher pairs", objective.network_evaluations(cfg), False))
    baselines = evaluation.BASELINES if schedule is None else evaluation.baselines_for(schedule)
    out.append(("baselines", len(baselines) * cfg.eval_samples * k, False))
    chain = cfg.train_steps * cfg.batch_size * k * (
        2 if max(cfg.guidance_scales() or (0,)) > 0 else 1)
    out.append(("training", chain, True))
    if objective.chains_per_sample(cfg) > 1:  # e.g. a control variate's start: forward only
        out.append(("training: the other chains (forward only)",
                    chain * (objective.chains_per_sample(cfg) - 1), False))
    evaluations = cfg.train_steps // cfg.eval_every + (cfg.train_steps % cfg.eval_every > 0)
    out.append(("periodic evaluation", evaluations * cfg.eval_samples * k, False))
    if cfg.select != "last":  # the start's validation and each evaluated step's
        out.append(("validation", (evaluations + 1) * cfg.validation_samples * k, False))
    out.append(("final comparison", 6 * cfg.final_samples * k, False))
    if reference:
        out.append((f"reference row ({cfg.reference}, {cfg.reference_steps} steps; once per "
                    "model)", cfg.final_samples * cfg.reference_steps, False))
    return out


def forward_rate(evaluator, batch=256, calls=3):
    """Network evaluations per second of the evaluator's denoiser on this machine (one batch,
    after a first call that traces)."""
    x = np.zeros([batch, *evaluator.image_shape], np.float32)
    denoiser = evaluator.sampling_denoiser
    bind = evaluator.guidance
    t = float(evaluator.denoiser.schedule.num_timesteps - 1)

    def call():
        if bind is None:
            return denoiser(x, t)
        return evaluator.denoiser.guided(np.zeros([batch], np.int32), 0.0)(x, t)

    np.asarray(call()[0])
    start = time.perf_counter()
    for _ in range(calls):
        np.asarray(call()[0])
    return batch * calls / max(time.perf_counter() - start, 1e-9)


def lines(steps, rate):
    """The plan's log lines: each phase's network evaluations and estimated minutes."""
    out, total = [], 0.0
    for name, count, training in steps:
        minutes = count * (TRAIN_COST if training else 1.0) / rate / 60
        total += minutes
        out.append(f"  {name:<58} {count:>12,} evaluations  ~{_minutes(minutes)}")
    out.append(f"  {'total':<58} {'':>12}               ~{_minutes(total)}")
    return out


def _minutes(m):
    return "<1 min" if m < 1 else f"{math.ceil(m)} min"
