"""A benchmark run: every (row, K) cell, cached in workdir/cells, then the outputs."""

import json
import math
import os

import numpy as np

from ddss_tf import evaluation, files, interrupt
from ddss_tf.benchmark.rows import ROWS, LearnedRow
from ddss_tf.benchmark.tables import write_outputs

__all__ = ["run"]


class _Benchmark:
    """One benchmark run: its config, work directory, log, the evaluator of its model and the
    learned samplers loaded so far (rows are stateless: what a run loads stays with the run)."""

    def __init__(self, cfg, workdir, log):
        self.cfg, self.workdir, self.log = cfg, workdir, log
        self.searches = cfg.searches or os.path.join(workdir, "searches")
        self.evaluator = evaluation.Evaluator(cfg.search, log, num_steps=cfg.num_steps)
        self.learned = {}  # search directory -> (layer, digest of coefficients.json, cost)

    def cell(self, row, k):
        """The cached or freshly computed cell: dict(record keys..., key, grid)."""
        ev = self.evaluator
        key = [row.name, int(k), self.cfg.num_samples, evaluation.EVAL_SEED,
               ev.model_fingerprint, ev.inputs_fingerprint, row.cache_inputs(self, k)]
        key = json.loads(json.dumps(key))
        path = os.path.join(self.workdir, "cells", f"{row.name}_k{k}_n{self.cfg.num_samples}.json")
        cached = evaluation.read_cache(path, self.log)
        if cached is not None:
            if cached.get("key") == key:  # label, role and cost: as the row says them now
                return dict(cached, sampler=row.label, role=row.role, **row.cost(self, k),
                            **row.extra())
            self.log(f"  {row.label} K={k}: inputs changed since {path}; recomputing")
        with interrupt.phase(f"the cell {row.label}, K = {k}", context=True):
            scores, grid = row.score(self, k)
        cell = dict(evaluation.record(row.label, k, scores, row.role), **row.cost(self, k),
                    **row.extra(), key=key, grid=np.round(grid, 5).tolist())
        files.write_json(path, cell)
        return cell


def run(cfg, workdir, log=print):
    """Evaluate every (sampler, K) cell of cfg (cached in workdir/cells) and write the
    table, results.json and the PNGs. Returns the records (dicts with RECORD_KEYS)."""
    cfg.validate()
    bench = _Benchmark(cfg, workdir, log)
    T = bench.evaluator.denoiser.schedule.num_timesteps
    plan = [(ROWS[name], k) for name in cfg.samplers
            for k in ROWS[name].steps(cfg.num_steps, T)]
    if cfg.only_searched:
        unsearched = [(row, k) for row, k in plan
                      if isinstance(row, LearnedRow) and not row.searched(bench, k)]
        for row, k in unsearched:
            log(f"skipping {row.label}, K = {k}: no finished search in {row.directory(bench, k)}")
        plan = [cell for cell in plan if cell not in unsearched]
    os.makedirs(os.path.join(workdir, "cells"), exist_ok=True)
    cells = []
    with interrupt.phase("the benchmark's cells"):  # each computed one: its own phase
        for i, (row, k) in enumerate(plan):
            log(f"[{i + 1}/{len(plan)}] {row.label}, K = {k}")
            cells.append(bench.cell(row, k))
    bad = [f"{c['sampler']} K={c['num_steps']}" for c in cells if not math.isfinite(c["fid"])]
    if bad:
        log(f"non-finite FID in: {', '.join(bad)}")
    with interrupt.phase("writing the table and figures"):
        return write_outputs(cfg, cells, workdir, log)
