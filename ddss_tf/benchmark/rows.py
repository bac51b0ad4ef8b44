"""The benchmark's rows: a sampler each, its layer at each K and how its cells are scored.

A row (`Row`) is stateless: what it loads (a learned sampler's coefficients) is kept by the
benchmark run it is given as `bench` (ddss_tf.benchmark.cells: its cfg, evaluator, searches
directory, log and `learned`). `ROWS` is the catalogue, in table order.
"""

import dataclasses
import hashlib
import os

from ddss_tf import evaluation, export, interrupt, samplers
from ddss_tf.evaluation import records as records_lib
from ddss_tf.search import objectives
from ddss_tf.search.config import FEW_STEPS, RECIPE_FIELDS, SearchConfig
from ddss_tf.search import workdir as workdir_lib
from ddss_tf.search.run import run_search

__all__ = ["Row", "FixedRow", "LearnedRow", "AcrossScalesRow", "WarmAcrossScalesRow",
           "ReferenceRow", "DataRow", "ROWS", "FLOW_ROWS", "WARM_TUNE", "sampler_names",
           "default_samplers"]

# The tuning across guidance scales of the row ggdm_pred_time_across_warm, which starts from
# the searches made at each anchor (WarmAcrossScalesRow): docs/guidance.md.
WARM_TUNE = dict(train_steps=200, learning_rate=2e-3, eval_every=50)
# ddss_search's recipe before issue 34 (KID, the DDIM start, 800 steps at 2e-2 to K = FEW_STEPS
# and 400 at 1e-2 above, batch 128, the best of 512 validation samples every 100 steps, the DDPM
# reference): the issue-14 rows' stored searches were made with it, and their rows keep it.
ISSUE14 = dict(objective="kid", init="ddim", batch_size=128, select="best", eval_every=100,
               eval_samples=512, validation_samples=512, reference="ddpm", reference_steps=1000,
               clip_samples=False)
ISSUE14_FEW = dict(train_steps=800, learning_rate=2e-2)
ISSUE14_MANY = dict(train_steps=400, learning_rate=1e-2)
# Above FEW_STEPS a search started from the best solver starts near the best this model does
# (UniPC quadratic is below the 1000-step DDPM at K = 10), where the default's KID gradient is
# noise and its 512-sample selection a coin toss: it fine-tunes instead, with twice the batch, a
# third of the rate and a 2,000-sample selection every 50 steps. At K = 10 this took the UniPC
# start from 0.403 / 0.113 to 0.358 / 0.083 (FID / held-out FID, 10,000 samples), where the
# defaults kept the start; a second training seed improved as much at its checkpoints, but its
# 2,000-sample selection kept the start (docs/ddss_search.md, "Few steps").
SOLVER_FINE_TUNE = dict(batch_size=256, learning_rate=3e-3, train_steps=200, eval_samples=2000,
                        validation_samples=2000, eval_every=50)
# Images per cell kept for the sample grid (the first ones of the first evaluation batch); a
# conditional model's cells keep one per class (sample i asks for label i mod C).
GRID_IMAGES = 6
# The grids every solver is benchmarked on besides its default (the DDIM code's strides).
SOLVER_GRIDS = ("quadratic", "linear")
# The solvers whose LD3 rows the table holds (LD3 learns the times of any of
# samplers.solver_names(); these two were measured at every K).
LD3_ROWS = ("dpm_solver_pp_2m", "unipc")


def _grid_images(bench):
    guidance = bench.evaluator.guidance
    return GRID_IMAGES if guidance is None else max(GRID_IMAGES, guidance.num_classes)


class Row:
    """One row of the table: a sampler evaluated at some K.

    `layer(bench, k)` is the sampler at K = k (None for a row without one), `cache_inputs`
    what its cached cells depend on besides the model, data and sample count, and
    `score(bench, k)` the cell's (scores, grid images)."""

    # Rows of one sampler searched with several training seeds share a group (the sampler's
    # label); the table adds their mean and standard deviation (benchmark.tables).
    group = None

    def __init__(self, name, label, role):
        self.name, self.label, self.role = name, label, role

    def extra(self):
        """Keys its records carry besides the scores: a seeded row's seed and group."""
        return {} if self.group is None else dict(seed=self.seed, group=self.group)

    def steps(self, ks, num_timesteps):
        """The K values of this row's cells."""
        return sorted(set(ks))

    def cache_inputs(self, bench, k):
        return None

    def cost(self, bench, k):
        """{search_seconds, search_network_evaluations} of the sampler at K = k."""
        return records_lib.no_cost()

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
    fields, e.g. family, pred, time, objective) at each K, with `few_steps` at K <= FEW_STEPS
    and `many_steps` at K > FEW_STEPS (SearchConfig fields); the rest of the recipe is
    ddss_search's at that K, and what the BenchmarkConfig sets for every row wins. `label`:
    the row's name in tables, by default its search's label (for a row whose objective is
    ddss_search's default, which depends on K, give one)."""

    def __init__(self, name, few_steps=None, many_steps=None, seeded=False, label=None,
                 **settings):
        super().__init__(name, label or SearchConfig(**settings).label(), "learned")
        self.settings = settings
        self.few_steps, self.many_steps = dict(few_steps or {}), dict(many_steps or {})
        if seeded:  # one of several training seeds of the same search
            self.seed, self.group = settings.get("seed", 0), self.label
            self.label = f"{self.label} (seed {self.seed})"

    def search_config(self, cfg, k, searches=""):
        """The SearchConfig of this row at K = k: the BenchmarkConfig's template search
        (`searches`: the benchmark's searches directory, for rows that start from others)."""
        tune = self.many_steps if int(k) > FEW_STEPS else self.few_steps
        # Every setting of the recipe resolves at the row's K (None) unless the row sets it;
        # what the BenchmarkConfig sets for every row wins.
        given = {key: v for key, v in dict(train_steps=cfg.train_steps,
                                           learning_rate=cfg.learning_rate,
                                           batch_size=cfg.batch_size).items() if v is not None}
        given.update(cfg.row_settings)
        # The template's objective too, when it took the default of its own K.
        unset = dict.fromkeys(RECIPE_FIELDS + (("objective",) if "objective" in
                                               cfg.search.resolved() else ()))
        return dataclasses.replace(
            cfg.search, **{**unset, **self.settings, **tune, **given}, num_steps=int(k))

    def directory(self, bench, k):
        """Its search work directory at K = k (named as ddss_search names it)."""
        return os.path.join(bench.searches, self.search_config(bench.cfg, k, bench.searches)
                            .run_name())

    def searched(self, bench, k):
        """True when its search at K = k has finished (results.json written)."""
        return workdir_lib.read_results(self.directory(bench, k)) is not None

    def _load(self, bench, k):
        """(layer, digest, cost): loaded from, or first searched into, its search work
        directory. A finished search there with other settings is refused."""
        scfg = self.search_config(bench.cfg, k, bench.searches)
        directory = self.directory(bench, k)
        if directory in bench.learned:
            return bench.learned[directory]
        finished = _finished_search(bench, scfg, directory)
        path = os.path.join(directory, workdir_lib.COEFFICIENTS)
        with open(path, "rb") as f:
            digest = hashlib.sha1(f.read()).hexdigest()[:16]
        layer = export.load_coefficients(path, bench.evaluator.sampling_denoiser, remat=False)
        cost = {key: finished.get(key) for key in records_lib.COST_KEYS}
        bench.learned[directory] = layer, digest, cost
        return bench.learned[directory]

    def cache_inputs(self, bench, k):
        return self._load(bench, k)[1]

    def cost(self, bench, k):
        return self._load(bench, k)[2]

    def layer(self, bench, k):
        return self._load(bench, k)[0]


def _unless_set(cfg, tune):
    """The settings of a row's `tune` (SearchConfig fields) that the BenchmarkConfig `cfg` does
    not set itself: its train_steps, learning_rate and batch_size, when given, win."""
    return {key: v for key, v in tune.items() if getattr(cfg, key, None) is None}


def _finished_search(bench, scfg, directory):
    """The results.json of the search `scfg` in `directory`: read, or searched (or resumed)
    there first. A finished search there with other settings is refused."""
    finished = workdir_lib.finished_search(directory, scfg)
    if finished is not None:
        return finished
    bench.log(f"searching {scfg.run_name()} in {directory} (rerun to resume if interrupted)")
    try:
        with interrupt.phase(f"its search in {directory}", context=True):
            run_search(scfg, directory, bench.log)
    except interrupt.Interrupted as e:
        raise interrupt.Interrupted(e.signal_name, f"the search in {directory} was "
                                    "interrupted; its checkpoint is saved: rerun the "
                                    "same command to resume") from e
    return workdir_lib.read_results(directory)


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
        starts = [os.path.join(d, workdir_lib.COEFFICIENTS)
                  for _, d in self.anchor_searches(cfg, k, searches or "searches")]
        return dataclasses.replace(super().search_config(cfg, k, searches),
                                   **_unless_set(cfg, self.tune), start_from=starts)

    def _load(self, bench, k):
        """LearnedRow's, after the per-scale searches (read once per run), their cost added."""
        directory = self.directory(bench, k)
        if directory not in bench.learned:
            costs = [_finished_search(bench, scfg, d)
                     for scfg, d in self.anchor_searches(bench.cfg, k, bench.searches)]
            layer, digest, cost = super()._load(bench, k)
            values = {key: [c.get(key) for c in [cost] + costs]
                      for key in records_lib.COST_KEYS}
            bench.learned[directory] = layer, digest, {
                key: None if None in v else sum(v) for key, v in values.items()}
        return bench.learned[directory]


class ReferenceRow(Row):
    """A many-step reference (evaluation.REFERENCES[kind]) with `steps` steps (at most the
    model's T), or every step of the model (None): the quality a fast sampler aims for, in a
    column of its own. Its scores are the reference cache's, which searches share."""

    def __init__(self, name, label, kind, steps=None, default_for=None):
        super().__init__(name, label, "reference")
        self.kind, self.num_steps = kind, steps
        self.default_for = default_for

    def steps(self, ks, num_timesteps):
        return [num_timesteps if self.num_steps is None else min(self.num_steps, num_timesteps)]

    def layer(self, bench, k):
        family, options, _ = evaluation.REFERENCES[self.kind]
        return bench.evaluator.baseline_layer(family, k, **options)

    def score(self, bench, k):
        ev = bench.evaluator
        scores, imgs = ev.reference_scores(bench.cfg.num_samples, steps=k, return_images=True,
                                           kind=self.kind)
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


# A rectified-flow model's own grid for the solvers: diffusers' flow sigmas.
FLOW_GRID = "flow_sigmas"
# The training seeds of the default row, `ddss_search --num_steps=K --seed=s` and nothing else.
DEFAULT_SEEDS = (0, 1, 2)
# Its label: the objective it resolves differs by K (objectives.default_name).
DEFAULT_LABEL = "DDSS GGDM +PRED +TIME, ddss_search's defaults"


def _catalogue():
    rows = [FixedRow(label.lower().replace(" ", "_"), label, family, options)
            for label, family, options in evaluation.BASELINES]
    # Every training-free solver on its own default grid and on the DDIM code's quadratic and
    # linear ones: at K <= 5 they are very sensitive to their grid, and which grid wins depends
    # on the model's schedule (on the bundled model the quadratic beats the logSNR-uniform at
    # every K from 3 to 6: docs/ddss_search.md, "Few steps"), so the best training-free row is
    # the best over grids.
    for name in samplers.solver_names():
        rows += [FixedRow(name, samplers.label(name), name, {})]
        rows += [FixedRow(f"{name}_{grid}", f"{samplers.label(name)} {grid}", name,
                          dict(stride=grid)) for grid in SOLVER_GRIDS]
    # The rows of a rectified-flow model only (FLOW_ROWS): Euler and DDPM on KerasHub's /
    # diffusers' FlowMatchEulerDiscreteScheduler grid (evaluation.FLOW_BASELINES), and Euler
    # and every training-free solver on the flow sigmas, where a search's screen tries them
    # (on digits_flow at K = 5 it ranked UniPC-3 and iPNDM there first).
    flow = [FixedRow(label.lower().replace(" ", "_"), label, family, options)
            for label, family, options in evaluation.FLOW_BASELINES
            if family not in samplers.solver_names()]
    flow += [FixedRow(f"euler_{FLOW_GRID}", f"Euler {FLOW_GRID}", "ddim",
                      dict(stride=FLOW_GRID, eta=0.0))]
    flow += [FixedRow(f"{name}_{FLOW_GRID}", f"{samplers.label(name)} {FLOW_GRID}", name,
                      dict(stride=FLOW_GRID)) for name in samplers.solver_names()]
    for row in flow:
        row.flow_only = True
    rows += flow
    # ddss_search --num_steps=K (--seed=s): the sampler a user gets with no other flag.
    rows += [LearnedRow(f"ddss_s{seed}", seeded=True, seed=seed, label=DEFAULT_LABEL)
             for seed in DEFAULT_SEEDS]
    old = dict(few_steps=ISSUE14_FEW, many_steps=ISSUE14_MANY, **ISSUE14)
    per_scale = LearnedRow("ggdm_pred_time", family="ggdm", pred=True, time=True, **old)
    rows += [LearnedRow("ggdm", family="ggdm", pred=False, time=False, **old), per_scale]
    # GGDM +PRED +TIME started from UniPC on the quadratic grid (the best solver at few steps)
    # written over states, rather than from DDIM: at K = 4 it beats both (docs/ddss_search.md).
    # Above FEW_STEPS it fine-tunes (SOLVER_FINE_TUNE).
    rows += [LearnedRow("ggdm_pred_time_unipc", family="ggdm", pred=True, time=True,
                        **dict(old, init="unipc", many_steps=SOLVER_FINE_TUNE))]
    # GGDM +PRED +TIME whose loss adds LD3's teacher distance to KID (--objective=kid_teacher):
    # the best row at K = 3, 4 and 5 (docs/ddss_search.md, "Few steps").
    rows += [LearnedRow("ggdm_pred_time_kid_teacher", family="ggdm", pred=True, time=True,
                        **dict(old, objective="kid_teacher"))]
    # LD3 (search.objectives.ld3): the solvers' own times, learned; each starts on its
    # solver's grid.
    ld3 = objectives.get("ld3")
    rows += [LearnedRow(f"ld3_{name}", family=name, objective=ld3.name, time=True, stride="",
                        select=ld3.default_select(), reference="ddpm", reference_steps=1000)
             for name in LD3_ROWS]
    rows += [AcrossScalesRow("ggdm_pred_time_across", family="ggdm", pred=True, time=True, **old),
             WarmAcrossScalesRow("ggdm_pred_time_across_warm", per_scale, WARM_TUNE,
                                 family="ggdm", pred=True, time=True, **old)]
    # The many-step references, each in the default table of one kind of model: DDPM with
    # all T steps (the papers') on a variance-preserving model, the probability-flow ODE's
    # solution (DPM-Solver++(2M), 100 steps: a tenth of the cost; a flow search's reference)
    # on a rectified flow, which is sampled along that ODE.
    rows += [ReferenceRow("ddpm_all", "DDPM all T steps", "ddpm", default_for="vp"),
             ReferenceRow("ode_100", "ODE reference (DPM-Solver++(2M))", "ode", steps=100,
                          default_for="flow"), DataRow()]
    return {row.name: row for row in rows}


ROWS = _catalogue()
# The names of the rectified-flow rows, in table order.
FLOW_ROWS = tuple(name for name, row in ROWS.items() if getattr(row, "flow_only", False))
# A conditional model's default rows (issue 17's table): the training-free solvers and the
# learned samplers, at one scale and across scales.
CONDITIONAL_DEFAULT = ("ddim_quadratic", "dpm_solver_pp_2m", "unipc", "dpm_solver_pp_2m_quadratic",
                        "unipc_quadratic", "ggdm_pred_time", "ggdm_pred_time_across",
                        "ggdm_pred_time_across_warm")


def sampler_names():
    """Every row `run` can evaluate, in table order."""
    return list(ROWS)


def default_samplers(conditional=False, flow=False):
    """The rows a benchmark evaluates when none are named: every row of an unconditional
    model's table, or a conditional model's (the solvers and the learned samplers); the
    rectified-flow rows (FLOW_ROWS) for a flow model only; its kind's many-step reference
    (ReferenceRow.default_for)."""
    if conditional:
        return CONDITIONAL_DEFAULT + (FLOW_ROWS if flow else ())
    kind = "flow" if flow else "vp"
    return tuple(n for n in sampler_names() if not getattr(ROWS[n], "conditional_only", False)
                 and (flow or not getattr(ROWS[n], "flow_only", False))
                 and getattr(ROWS[n], "default_for", None) in (None, kind))
