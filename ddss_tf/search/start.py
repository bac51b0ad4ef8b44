"""Where a search starts: with init "auto", the best training-free sampler this model has at the
search's K, chosen on validation samples, which the learnable family is then written from.

Which solver and which grid are best depends on the model's schedule and on K (on a cosine-
schedule digits model DPM-Solver++(2M)'s logSNR-uniform grid scored 6 to 19 times worse than the
linear one; on the bundled linear-schedule model the quadratic grid wins at K <= 5), so nothing
fixed can pick it. The screen scores every deterministic baseline the family can start from
(`samplers.inits`, less the stochastic DDPM) on every grid of the model's schedule
(`samplers.stride_names(schedule)`, or the one the search names) in two rounds on the validation
seed (noise.VALIDATION_SEED: never the evaluation's x_T), in the loss's feature space:

    round 1: every candidate on SCREEN_SAMPLES samples, by FID and by KID
    round 2: the FINALISTS best by FID and the FINALISTS best by KID (at most MAX_FINALISTS)
             on `eval_samples` samples (the first round's are a prefix), by FID

and starts from the lowest FID of round 2. Round 1 ranks twice because neither statistic alone
is safe on a few hundred samples. FID's bias there (about 2.2 of the 2.6 it reads at K = 20)
depends on each sampler's feature covariance, and near a tie it differs between samplers as much
as their FIDs do: on the bundled model at K = 20, FID on 500 samples put DPM-Solver++(2M) on the
linear grid 11th of 36, though on 10,000 samples it is the best training-free sampler (0.365,
against 0.416-0.440 for the four that went on). KID is unbiased and ranks it first on the same
500, but is the noisier of the two where samplers differ more (at K = 10, Spearman 0.74 against
the 10,000-sample FIDs of 10 samplers, FID 0.98). On 2,000 samples FID ranked those samplers
with Spearman 0.98-1.0 at K = 5, 10 and 20 (docs/ddss_search.md, "The start's screen").

An untrained layer built from the result reproduces that sampler (to float rounding), so the
search starts no worse than the best training-free sampler the project has at that K. Each
candidate costs K network evaluations per sample, forward only: at K = 10 with 6 families on 6
grids, at most 340,000, a fraction of a training run's. The result is cached in the work directory
(`workdir.START`), so a resumed search reuses it.
"""

import os

import numpy as np

from ddss_tf import evaluation, files, noise, samplers

__all__ = ["AUTO", "SCREEN_SAMPLES", "FINALISTS", "MAX_FINALISTS", "Start", "candidates",
           "finalists", "resolve"]

AUTO = "auto"
SCREEN_SAMPLES = 500
FINALISTS = 4
RANKING = ("fid", "kid")  # round 1's statistics (`finalists`)
MAX_FINALISTS = len(RANKING) * FINALISTS


def candidates(family, pred, stride="", schedule=None):
    """[(init, stride)] a search of `family` with init "auto" screens: every deterministic init
    of the family (a solver init only with +PRED) on `stride`, or when it is "" on every grid
    (of `schedule`'s: the rectified-flow grids only on a rectified flow)."""
    inits = [i for i in samplers.inits(family) if i != "ddpm"]
    if not pred:
        inits = [i for i in inits if i in ("ddim",)]
    strides = [stride] if stride else samplers.stride_names(schedule)
    return [(i, s) for i in inits for s in strides]


def _scores(ev, init, stride, num_steps, num_samples):
    """dict(fid, kid) of a candidate on the validation seed (inf when a sample is not finite)."""
    layer = ev.baseline_layer(init, num_steps, stride=stride)
    images = ev.sample(layer, num_samples, seed=noise.VALIDATION_SEED)
    if not np.all(np.isfinite(images)):
        return {m: float("inf") for m in RANKING}
    return ev.scorer.ranking(images)


def finalists(round1, count=FINALISTS):
    """The candidates of round 1 ({candidate: dict(fid, kid)}) that go on to round 2: the
    `count` best by each statistic of RANKING, in that order, each once."""
    best = [p for m in RANKING for p in sorted(round1, key=lambda p: round1[p][m])[:count]]
    return list(dict.fromkeys(best))


class Start:
    """Where a search starts: `init` and `stride` (the family's options the layer is built with),
    and for an "auto" start the screen's record (`record`: written by `save`)."""

    def __init__(self, init, stride, record=None):
        self.init, self.stride, self.record = init, stride, record

    def describe(self):
        return _describe(self.init, self.stride)

    def save(self, path):
        """Write the screen's record (nothing for a start the config names): the search's own
        cache, so a resumed search does not screen again. Called under the work directory's
        lock."""
        if self.record is not None and not os.path.exists(path):
            files.write_json(path, self.record)


def resolve(cfg, ev, path, log):
    """The `Start` of the search `cfg` on evaluator `ev`: cfg's init and stride unless its init is
    "auto", else the screen's choice (read from `path` when a run with the same key wrote it;
    nothing is written here: `Start.save`)."""
    if cfg.init != AUTO:
        return Start(cfg.init, cfg.stride)
    pairs = candidates(cfg.family, cfg.pred, cfg.stride, ev.denoiser.schedule)
    key = _jsonable(dict(num_steps=cfg.num_steps, candidates=pairs, screen=SCREEN_SAMPLES,
                         finalists=FINALISTS, samples=cfg.eval_samples, model=ev.model_fingerprint,
                         inputs=ev.inputs_fingerprint, ranking=RANKING))
    cached = evaluation.read_cache(path, log)
    if cached and _same_screen(cached.get("key"), key):
        start = Start(cached["init"], cached["stride"])
        log(f"start: {start.describe()} (screened before: {path})")
        return start
    first = min(SCREEN_SAMPLES, cfg.eval_samples)
    log(f"start: screening {len(pairs)} training-free samplers at K={cfg.num_steps} on {first} "
        f"validation samples, the best {FINALISTS} by FID and by KID on {cfg.eval_samples} ...")
    round1 = {p: _scores(ev, *p, cfg.num_steps, first) for p in pairs}
    chosen = finalists(round1)
    round2 = {p: _scores(ev, *p, cfg.num_steps, cfg.eval_samples)["fid"]
              if cfg.eval_samples > first else round1[p]["fid"] for p in chosen}
    init, stride = min(round2, key=round2.get)
    for p in chosen:
        log(f"  {_describe(*p):<44} FID {round2[p]:.4f} on {cfg.eval_samples}")
    record = dict(key=key, init=init, stride=stride,
                  round1=[dict(init=i, stride=s, **{m: _finite(v) for m, v in r.items()})
                          for (i, s), r in round1.items()],
                  round2=[dict(init=i, stride=s, fid=_finite(f)) for (i, s), f in round2.items()])
    start = Start(init, stride, record)
    log(f"start: {start.describe()}")
    return start


def _same_screen(cached, key):
    """Whether a cached screen's key is `key`. A record written before round 1 also ranked by
    KID (its key has no "ranking") still stands for the same run: its work directory trained
    from it."""
    if isinstance(cached, dict) and "ranking" not in cached:
        key = {k: v for k, v in key.items() if k != "ranking"}
    return cached == key


def _describe(init, stride):
    return f"{samplers.label(init)} {stride}"


def _finite(value):
    return value if np.isfinite(value) else None


def _jsonable(value):
    """value as it reads back from JSON (tuples become lists)."""
    import json

    return json.loads(json.dumps(value))
