"""The paper's table on one model: training-free and learned samplers at several K.

    records = benchmark.run(BenchmarkConfig(), "bench")      # what `ddss_benchmark` does

A row is one sampler (a `Row`: its layer at each K and how a cell is scored), a cell
one sampler at one K. A cell draws `num_samples` images on the evaluation seeds
(noise.EVAL_SEED: the same x_T for every sampler and every K) and scores them with
evaluation.Scorer: FID, KID +- SE and IS in the feature space the searches
optimise, and the held-out FID. Every finished cell is cached in workdir/cells/
under a key naming the model, the feature networks, the sample count and (for a
learned sampler) its coefficients, so an interrupted benchmark resumes where it
stopped and a changed input is recomputed.

Learned samplers come from search work directories named as `ddss_search` names
them (`SearchConfig.run_name()`) under `searches`: a finished search is loaded
from its coefficients.json, a missing or unfinished one is searched (or resumed)
there first with the template SearchConfig's settings. A finished search
there with other settings (bookkeeping aside) is refused with one line.

The row "training_data" (K = 0, column "data") scores `num_samples` of the reference
images themselves, drawn with replacement: a model that reproduced its training data
exactly would score this. FID is biased upwards at a finite sample count, so this is
FID's floor at that count, and the scale against which the samplers' distances are
read. (KID is unbiased, so its floor is 0; the row reports none: a sample that repeats
the reference set's own images breaks the estimator's independence and biases it low.)

A class-conditional model is benchmarked at one classifier-free guidance scale (the
template search's guidance_scale; ddss_tf.guidance): every row samples it guided at that
scale, sample i asking for label i mod C, and the records gain per-class FID / KID and the
held-out classifier's accuracy. The row "ggdm_pred_time_across" is one sampler searched
across `guidance_anchors` (shared by the benchmarks at each scale) and run at the
benchmark's scale; "ggdm_pred_time_across_warm" is the same started from the searches made
at each anchor (the row "ggdm_pred_time" there) and tuned across the range.

Outputs in workdir: table.md (the paper's shape, rows samplers, columns K,
"FID / IS" cells, then every metric), results.json (one record per cell),
fid_vs_k.png and samples.png (rows samplers, columns K, the same x_T
everywhere); for a conditional model also samples_by_label_k<K>.png (rows samplers,
columns the requested labels 0..C-1), written without matplotlib. The other PNGs need
matplotlib (`pip install "ddss_tf[plots]"`).
"""

import dataclasses
import hashlib
import json
import math
import os
from typing import Optional

import numpy as np

from ddss_tf import evaluation, export, files, images, interrupt, samplers
from ddss_tf.evaluation import plots, records as records_lib
from ddss_tf.search import ld3
from ddss_tf.search.config import SearchConfig, default_optimisation, default_select
from ddss_tf.search.run import run_search
from ddss_tf.search.workdir import differing_settings

__all__ = ["BenchmarkConfig", "Interrupted", "sampler_names", "run", "paper_table",
           "metrics_table", "RECORD_KEYS", "Row"]

RECORD_KEYS = ("sampler", "num_steps", "fid", "kid", "kid_se", "is", "heldout", "num_samples",
               "role", "search_seconds", "search_network_evaluations")
# A conditional model's records also hold these (evaluation.CONDITIONAL_KEYS).
CONDITIONAL_KEYS = records_lib.CONDITIONAL_KEYS
# What a row's sampler cost to learn (None for training-free rows, and for searches finished
# before their cost was recorded).
_NO_COST = dict(search_seconds=None, search_network_evaluations=None)
# The tuning across guidance scales of the row ggdm_pred_time_across_warm, which starts from
# the searches made at each anchor (WarmAcrossScalesRow): docs/guidance.md.
WARM_TUNE = dict(train_steps=200, learning_rate=2e-3, eval_every=50)
# Images per cell kept for the sample grid (the first ones of the first evaluation batch); a
# conditional model's cells keep one per class (sample i asks for label i mod C).
GRID_IMAGES = 6


def _grid_images(bench):
    guidance = bench.evaluator.guidance
    return GRID_IMAGES if guidance is None else max(GRID_IMAGES, guidance.num_classes)


class Row:
    """One row of the table: a sampler evaluated at some K.

    `layer(bench, k)` is the sampler at K = k (None for a row without one), `cache_inputs`
    what its cached cells depend on besides the model, data and sample count, and
    `score(bench, k)` the cell's (scores, grid images)."""

    def __init__(self, name, label, role):
        self.name, self.label, self.role = name, label, role

    def steps(self, ks, num_timesteps):
        """The K values of this row's cells."""
        return sorted(set(ks))

    def cache_inputs(self, bench, k):
        return None

    def cost(self, bench, k):
        """{search_seconds, search_network_evaluations} of the sampler at K = k."""
        return dict(_NO_COST)

    def layer(self, bench, k):
        return None

    def score(self, bench, k):
        scores, imgs = bench.evaluator.sample_and_score(self.layer(bench, k),
                                                        bench.cfg.num_samples,
                                                        f"{self.label} K={k}")
        return scores, imgs[:_grid_images(bench)]


class FixedRow(Row):
    """A training-free family with fixed options."""

    def __init__(self, name, label, family, options):
        super().__init__(name, label, "baseline")
        self.family, self.options = family, dict(options)

    def cache_inputs(self, bench, k):
        return [self.family, self.options]

    def layer(self, bench, k):
        return bench.evaluator.baseline_layer(self.family, k, **self.options)


class LearnedRow(Row):
    """A sampler learned by a search in the benchmark's searches directory (searched there
    first when it is missing or unfinished): the template search with `settings` (SearchConfig
    fields, e.g. family, pred, time, objective) at each K."""

    def __init__(self, name, **settings):
        super().__init__(name, SearchConfig(**settings).label(), "learned")
        self.settings = settings

    def search_config(self, cfg, k, searches=""):
        """The SearchConfig of this row at K = k: the BenchmarkConfig's template search
        (`searches`: the benchmark's searches directory, for rows that start from others)."""
        return dataclasses.replace(cfg.search, **self.settings, num_steps=int(k),
                                   train_steps=cfg.train_steps, learning_rate=cfg.learning_rate)

    def directory(self, bench, k):
        """Its search work directory at K = k (named as ddss_search names it)."""
        return os.path.join(bench.searches, self.search_config(bench.cfg, k, bench.searches)
                            .run_name())

    def searched(self, bench, k):
        """True when its search at K = k has finished (results.json written)."""
        return os.path.exists(os.path.join(self.directory(bench, k), "results.json"))

    def _load(self, bench, k):
        """(layer, digest, cost): loaded from, or first searched into, its search work
        directory. A finished search there with other settings is refused."""
        scfg = self.search_config(bench.cfg, k, bench.searches)
        directory = self.directory(bench, k)
        if directory in bench.learned:
            return bench.learned[directory]
        finished = _finished_search(bench, scfg, directory)
        path = os.path.join(directory, "coefficients.json")
        with open(path, "rb") as f:
            digest = hashlib.sha1(f.read()).hexdigest()[:16]
        layer = export.load_coefficients(path, bench.evaluator.sampling_denoiser, remat=False)
        cost = {key: finished.get(key) for key in _NO_COST}
        bench.learned[directory] = layer, digest, cost
        return bench.learned[directory]

    def cache_inputs(self, bench, k):
        return self._load(bench, k)[1]

    def cost(self, bench, k):
        return self._load(bench, k)[2]

    def layer(self, bench, k):
        return self._load(bench, k)[0]


def _finished_search(bench, scfg, directory):
    """The results.json of the search `scfg` in `directory`: read, or searched (or resumed)
    there first. A finished search there with other settings is refused."""
    results = os.path.join(directory, "results.json")
    if os.path.exists(results):
        diff = differing_settings(files.read_json(results, "results file", dict).get("config"),
                                  scfg)
        if diff:
            raise ValueError(f"{directory} holds a finished search with different "
                             f"{', '.join(diff)} than this benchmark's; give the same "
                             "settings or another --searches directory")
    else:
        bench.log(f"searching {scfg.run_name()} in {directory} (rerun to resume if "
                  "interrupted)")
        try:
            run_search(scfg, directory, bench.log)
        except interrupt.Interrupted as e:
            raise interrupt.Interrupted(e.signal_name, f"the search in {directory} was "
                                        "interrupted; its checkpoint is saved: rerun the "
                                        "same command to resume") from e
    return files.read_json(results, "results file", dict)


class AcrossScalesRow(LearnedRow):
    """One sampler searched across the BenchmarkConfig's guidance_anchors (a conditional model
    only), evaluated at the benchmark's guidance scale: its coefficients there, interpolated
    between the anchors' (ddss_tf.guidance)."""

    conditional_only = True

    def __init__(self, name, **settings):
        super().__init__(name, **settings)
        self.label += ", across scales"

    def search_config(self, cfg, k, searches=""):
        return dataclasses.replace(super().search_config(cfg, k, searches),
                                   guidance_scale=[float(w) for w in cfg.guidance_anchors])


class WarmAcrossScalesRow(AcrossScalesRow):
    """The sampler across guidance_anchors started from the searches made at each anchor (the
    row `per_scale`'s, searched first where missing) and then tuned across the range with
    `tune` (SearchConfig fields: a shorter, gentler search than one from scratch; the
    BenchmarkConfig's train_steps and learning_rate, when set, win). Its cost is the tuning's
    plus the per-scale searches'."""

    def __init__(self, name, per_scale, tune, **settings):
        super().__init__(name, **settings)
        self.label += " from per-scale searches"
        self.per_scale, self.tune = per_scale, dict(tune)

    def anchor_searches(self, cfg, k, searches):
        """[(SearchConfig, work directory)] of the per-scale searches it starts from."""
        out = []
        for w in cfg.guidance_anchors:
            scfg = dataclasses.replace(self.per_scale.search_config(cfg, k, searches),
                                       guidance_scale=float(w))
            out.append((scfg, os.path.join(searches, scfg.run_name())))
        return out

    def search_config(self, cfg, k, searches=""):
        starts = [os.path.join(d, "coefficients.json")
                  for _, d in self.anchor_searches(cfg, k, searches or "searches")]
        # The benchmark's train_steps / learning_rate, when it sets them, apply here too.
        tune = {key: v for key, v in self.tune.items() if getattr(cfg, key, None) is None}
        return dataclasses.replace(super().search_config(cfg, k, searches), **tune,
                                   start_from=starts)

    def _load(self, bench, k):
        """LearnedRow's, after the per-scale searches (read once per run), their cost added."""
        directory = self.directory(bench, k)
        if directory not in bench.learned:
            costs = [_finished_search(bench, scfg, d)
                     for scfg, d in self.anchor_searches(bench.cfg, k, bench.searches)]
            layer, digest, cost = super()._load(bench, k)
            values = {key: [c.get(key) for c in [cost] + costs] for key in _NO_COST}
            bench.learned[directory] = layer, digest, {
                key: None if None in v else sum(v) for key, v in values.items()}
        return bench.learned[directory]


class AllStepsRow(Row):
    """DDPM with every step of the model: the quality a fast sampler aims for."""

    def __init__(self):
        super().__init__("ddpm_all", "DDPM all T steps", "reference")

    def steps(self, ks, num_timesteps):
        return [num_timesteps]

    def layer(self, bench, k):
        return bench.evaluator.baseline_layer("ddpm", k, stride="linear")

    def score(self, bench, k):
        ev = bench.evaluator
        scores, imgs = ev.reference_scores(bench.cfg.num_samples, steps=k, return_images=True)
        evaluation.log_scores(self.label, scores, bench.log, " (cached)" if imgs is None else "")
        # Cached scores come without images: draw just the grid's.
        count = _grid_images(bench)
        grid = imgs[:count] if imgs is not None else ev.grid_images(
            self.layer(bench, k), bench.cfg.num_samples, count)
        return scores, grid


class DataRow(Row):
    """The reference images themselves, resampled: FID's floor at the sample count (K = 0).
    KID is unbiased (its floor is 0), but not for a sample that repeats the very images of
    the reference set (the two sets are not independent): this row reports no KID."""

    def __init__(self):
        super().__init__("training_data", "Training data, resampled", "data")

    def steps(self, ks, num_timesteps):
        return [0]

    def score(self, bench, k):
        scores, imgs = bench.evaluator.score_resampled_real(bench.cfg.num_samples)
        evaluation.log_scores(self.label, scores, bench.log)
        return scores, imgs[:_grid_images(bench)]


def _catalogue():
    rows = [FixedRow(label.lower().replace(" ", "_"), label, family, options)
            for label, family, options in evaluation.BASELINES]
    rows += [FixedRow(name, samplers.label(name), name, {})
             for name in ("dpm_solver_pp_2m", "unipc")]
    # The solvers on the DDIM quadratic grid too: at K <= 5 they are very sensitive to their
    # grid, and on the bundled model this one beats their logSNR-uniform default at every K
    # from 3 to 6 (docs/ddss_search.md, "Few steps").
    rows += [FixedRow(f"{name}_quadratic", f"{samplers.label(name)} quadratic", name,
                      dict(stride="quadratic")) for name in ("dpm_solver_pp_2m", "unipc")]
    per_scale = LearnedRow("ggdm_pred_time", family="ggdm", pred=True, time=True)
    rows += [LearnedRow("ggdm", family="ggdm", pred=False, time=False), per_scale]
    # LD3 (search.ld3): the solvers' own times, learned; each starts on its solver's grid.
    rows += [LearnedRow(f"ld3_{name}", family=name, objective="ld3", time=True, stride="",
                        select=default_select("ld3")) for name in ld3.FAMILIES]
    rows += [AcrossScalesRow("ggdm_pred_time_across", family="ggdm", pred=True, time=True),
             WarmAcrossScalesRow("ggdm_pred_time_across_warm", per_scale, WARM_TUNE,
                                 family="ggdm", pred=True, time=True)]
    rows += [AllStepsRow(), DataRow()]
    return {row.name: row for row in rows}


_ROWS = _catalogue()
# A conditional model's default rows (issue 17's table): the training-free solvers and the
# learned samplers, at one scale and across scales.
_CONDITIONAL_DEFAULT = ("ddim_quadratic", "dpm_solver_pp_2m", "unipc", "dpm_solver_pp_2m_quadratic",
                        "unipc_quadratic", "ggdm_pred_time", "ggdm_pred_time_across",
                        "ggdm_pred_time_across_warm")


def sampler_names():
    """Every row `run` can evaluate, in table order."""
    return list(_ROWS)


def default_samplers(conditional=False):
    """The rows a benchmark evaluates when none are named: every row of an unconditional
    model's table, or a conditional model's (the solvers and the learned samplers)."""
    if conditional:
        return _CONDITIONAL_DEFAULT
    return tuple(n for n in sampler_names() if not getattr(_ROWS[n], "conditional_only", False))


@dataclasses.dataclass
class BenchmarkConfig:
    """What to evaluate.

    search: the template of every search: model, data, feature networks and the
      optimisation settings of the learned rows (family, pred, time, K, train_steps and
      learning_rate are set per row; its final_samples is the search's own final evaluation,
      not the benchmark's).
    train_steps, learning_rate: of every learned row's search; None: ddss_search's default
      at the row's K and objective (`search.default_optimisation`).
    searches: directory of the learned rows' search work directories ("" = workdir/searches).
    only_searched: learned rows fill only the K whose search in `searches` has finished; the
      other cells are skipped (and left empty in the table) instead of searched there first.
    num_samples: samples per cell. FID's upward bias shrinks as this grows: on the bundled
      digits, the training images themselves score 0.65 at 2,000 and 0.13 at 10,000, so at
      2,000 the bias is as large as the differences between the better samplers.
    """
    samplers: tuple = default_samplers()
    num_steps: tuple = (3, 4, 5, 10, 20)
    num_samples: int = 10000
    searches: str = ""
    only_searched: bool = False
    # The anchor scales of the row ggdm_pred_time_across (a conditional model).
    guidance_anchors: tuple = (0.0, 1.0, 3.0)
    train_steps: Optional[int] = None
    learning_rate: Optional[float] = None
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)

    def validate(self):
        unknown = [s for s in self.samplers if s not in _ROWS]
        if unknown or not self.samplers:
            raise ValueError(f"unknown samplers {unknown or '(none given)'}; accepted: "
                             f"{', '.join(sampler_names())}")
        if not self.num_steps or any(int(k) != k or k < 1 for k in self.num_steps):
            raise ValueError(f"num_steps must be a non-empty list of integers >= 1, got "
                             f"{list(self.num_steps)}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 (KID needs two samples), got "
                             f"{self.num_samples}")
        self.search.validate()
        scale = self.search.guidance_scale
        if isinstance(scale, (list, tuple)):
            raise ValueError(f"a benchmark runs at one guidance scale, got {list(scale)}; the row "
                             "ggdm_pred_time_across is the sampler across guidance_anchors "
                             "(run one benchmark per scale, sharing its searches directory)")
        across = [s for s in self.samplers if getattr(_ROWS[s], "conditional_only", False)]
        if across and scale is None:
            raise ValueError(f"rows {', '.join(across)} take a conditional model (a guidance "
                             "scale)")
        if across:
            dataclasses.replace(self.search, guidance_scale=list(self.guidance_anchors)).validate()
        if (self.search.train_steps, self.search.learning_rate) != default_optimisation(
                self.search.num_steps, self.search.objective):
            raise ValueError("train_steps and learning_rate are set per row (each K has its "
                             "default); give them as the BenchmarkConfig's, not its search "
                             "template's")

    def rows_search(self, name, k, searches=""):
        """The SearchConfig of the learned row `name` (`sampler_names()`) at K = k (searches:
        the benchmark's searches directory, for a row that starts from others' searches)."""
        row = _ROWS.get(name)
        if not isinstance(row, LearnedRow):
            learned = [n for n, r in _ROWS.items() if isinstance(r, LearnedRow)]
            raise ValueError(f"{name!r} is not a learned row; learned rows: {', '.join(learned)}")
        return row.search_config(self, k, searches)


# A search the benchmark started was stopped (SIGINT / SIGTERM); rerun to resume. The old
# spelling of interrupt.Interrupted, which run_search raises.
Interrupted = interrupt.Interrupted


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
            if cached.get("key") == key:  # role and cost: also for cells cached before them
                return dict(cached, role=row.role, **row.cost(self, k))
            self.log(f"  {row.label} K={k}: inputs changed since {path}; recomputing")
        scores, grid = row.score(self, k)
        cell = dict(evaluation.record(row.label, k, scores, row.role), **row.cost(self, k),
                    key=key, grid=np.round(grid, 5).tolist())
        files.write_json(path, cell)
        return cell


def paper_table(records, ks):
    """The paper's Table 1 shape: rows samplers, columns K, "FID / IS" cells; the
    all-steps DDPM row and the resampled training data (K = 0, column "data") fill their
    own columns."""
    cols = records_lib.columns(records, ks)
    rows = {}
    for r in records:
        is_ = "n/a" if r["is"] is None else f"{r['is']:.2f}"  # no IS without classifier logits
        rows.setdefault(r["sampler"], {})[r["num_steps"]] = f"{r['fid']:.3f} / {is_}"
    lines = ["| sampler | " + " | ".join(records_lib.column_label(k) for k in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for label, cells in rows.items():
        lines.append(f"| {label} | " + " | ".join(cells.get(k, "") for k in cols) + " |")
    return "\n".join(lines) + "\n"


def cost_table(records):
    """The learned rows' search cost beside their FID: which buys the most quality per minute
    ("" without learned rows). Seconds are the search's training loop on its machine."""
    learned = [r for r in records if r["role"] == "learned"]
    if not learned:
        return ""
    lines = ["\nWhat each learned sampler cost to search (its training loop's wall time and the "
             "network evaluations in its loss):\n",
             "| sampler | K | FID | search minutes | network evaluations |", "|---|---|---|---|---|"]
    for r in learned:
        seconds, evals = r["search_seconds"], r["search_network_evaluations"]
        lines.append(f"| {r['sampler']} | {r['num_steps']} | {r['fid']:.3f} | "
                     f"{'n/a' if seconds is None else format(seconds / 60, '.1f')} | "
                     f"{'n/a' if evals is None else format(evals, ',')} |")
    return "\n".join(lines) + "\n"


def metrics_table(records):
    """Every metric of every cell (the search's results.md columns)."""
    return evaluation.markdown_table(records)


def _write_outputs(cfg, cells, workdir, log):
    records = [{k: c[k] for k in RECORD_KEYS + CONDITIONAL_KEYS if k in c} for c in cells]
    ks = list(cfg.num_steps)
    n = cfg.num_samples
    text = (f"# Benchmark: FID / IS on {n} samples\n\n"
            f"Model `{cfg.search.model}`, data `{cfg.search.dataset}` ({cfg.search.split}), "
            f"features `{cfg.search.features}`, held-out features "
            f"`{cfg.search.heldout_features}`; the same x_T for every cell.\n\n"
            f"{paper_table(records, ks)}\nEvery metric (KID with its block standard error; "
            f"held-out FID in the second feature space):\n\n{metrics_table(records)}"
            f"{cost_table(records)}")
    with files.atomic_file(os.path.join(workdir, "table.md")) as f:
        f.write(text)
    files.write_json(os.path.join(workdir, "results.json"), records)
    if any("class_fid" in r for r in records):
        _write_label_grids(cells, ks, workdir)
    try:
        plots.fid_vs_k(records, ks, os.path.join(workdir, "fid_vs_k.png"))
        plots.sample_grid(cells, ks, os.path.join(workdir, "samples.png"))
    except ImportError:
        log('matplotlib is not installed: no fid_vs_k.png / samples.png '
            '(pip install "ddss_tf[plots]")')
    log("\n" + paper_table(records, ks))
    return records


def _write_label_grids(cells, ks, workdir):
    """samples_by_label_k<K>.png for each K: rows samplers, columns the requested labels (a
    conditional model's cells keep one image per class, in label order)."""
    for k in ks:
        rows = [c for c in cells if c["num_steps"] == k]
        if not rows:
            continue
        grid = images.labelled_rows([np.asarray(c["grid"], np.float32) for c in rows],
                                    ncols=len(rows[0]["grid"]), scale=4,
                                    labels=[c["sampler"] for c in rows])
        images.write_png(os.path.join(workdir, f"samples_by_label_k{k}.png"), grid)


def run(cfg, workdir, log=print):
    """Evaluate every (sampler, K) cell of cfg (cached in workdir/cells) and write the
    table, results.json and the PNGs. Returns the records (dicts with RECORD_KEYS)."""
    cfg.validate()
    bench = _Benchmark(cfg, workdir, log)
    T = bench.evaluator.denoiser.schedule.num_timesteps
    plan = [(_ROWS[name], k) for name in cfg.samplers
            for k in _ROWS[name].steps(cfg.num_steps, T)]
    if cfg.only_searched:
        unsearched = [(row, k) for row, k in plan
                      if isinstance(row, LearnedRow) and not row.searched(bench, k)]
        for row, k in unsearched:
            log(f"skipping {row.label}, K = {k}: no finished search in {row.directory(bench, k)}")
        plan = [cell for cell in plan if cell not in unsearched]
    os.makedirs(os.path.join(workdir, "cells"), exist_ok=True)
    cells = []
    for i, (row, k) in enumerate(plan):
        log(f"[{i + 1}/{len(plan)}] {row.label}, K = {k}")
        cells.append(bench.cell(row, k))
    bad = [f"{c['sampler']} K={c['num_steps']}" for c in cells if not math.isfinite(c["fid"])]
    if bad:
        log(f"non-finite FID in: {', '.join(bad)}")
    return _write_outputs(cfg, cells, workdir, log)
