"""What a search is: the sampler family to learn, the loss, the optimiser and the run's bookkeeping.

`SearchConfig()` with no arguments is the main job: GGDM +PRED +TIME with K = 10
on the bundled digits DDPM, linear-kernel KID in the bundled classifier's
feature space, sized to finish within minutes on a laptop CPU.
"""

import dataclasses
import json
import math
import os
from typing import List, Optional, Union

from ddss_tf import data, models, noise, samplers, settings
from ddss_tf.metrics import mmd
from ddss_tf.precision import PRECISIONS
from ddss_tf.schedules import MAX_TIMESTEPS
from ddss_tf.search import objectives, start, strategies
from ddss_tf.search.select import SELECTS
from ddss_tf.search.objectives import FEW_STEPS

_AUTO = start.AUTO  # build_sampler's `start` argument shadows the module

__all__ = ["SearchConfig", "default_settings", "RECIPE_FIELDS", "FEW_STEPS", "LR_DECAYS",
           "SELECTS", "MIN_EVAL_SAMPLES", "MAX_SEED"]

LR_DECAYS = ("cosine", "constant")
MIN_EVAL_SAMPLES = 10  # the Inception Score's 10 splits; KID and FID need fewer
MAX_SEED = noise.MAX_SEED  # the training noise is keyed on (seed, step) as int64


# The settings a search resolves from its K and objective when it leaves them unset (None):
# the objective's recipe (`objectives.Objective.recipe`), printed at the start of a search.
RECIPE_FIELDS = ("init", "batch_size", "train_steps", "learning_rate", "select", "eval_every",
                 "eval_samples", "validation_samples", "clip_samples")


def _objective(name):
    """The registered objective `name`, or the base class's defaults for an unknown name
    (refused by `validate`, not by the constructor)."""
    return objectives.find(name) or objectives.Objective()


def default_settings(num_steps, objective="kid"):
    """{field: value} of RECIPE_FIELDS for a search at K = num_steps with `objective` that
    sets none of them (`Objective.recipe`)."""
    return dict(_objective(objective).recipe(num_steps))


def _searchable_families():
    """Every family some objective learns (--family's choices)."""
    return sorted({f for o in objectives.all_objectives() for f in o.families()})


def _inits():
    return sorted({i for f in samplers.learnable_names() for i in samplers.inits(f)}) + [
        start.AUTO]


_ = settings.setting  # every field below: (default, help, accepted values / bounds)


@dataclasses.dataclass
class SearchConfig(models.ModelSpec, data.DataSpec):
    """What a search is: every setting of `ddss_search` (its flags are generated from these
    fields), with the model (models.ModelSpec) and its data (data.DataSpec)."""

    # The sampler family (docs/design.md, "Sampler families").
    family: str = _("ggdm", "Sampler family to learn; the training-free ODE solvers learn "
                    "their times with --objective=ld3.", choices=_searchable_families)
    num_steps: int = _(10, "K, network evaluations per sample.", lower=1)
    stride: str = _("", "Initial query times; default: the family's "
                    "(samplers.default_stride; on a flow model its flow grid, docs/flow.md).",
                    choices=samplers.stride_names)
    pred: bool = _(True, "+PRED: learn the x0-prediction coefficients (GGDM).")
    time: bool = _(True, "+TIME: learn the query times.")
    # The paper starts every family at DDPM; with a budget of minutes, DDIM(eta=0) is the better
    # start (the runs behind the defaults are tabled in docs/ddss_search.md).
    init: Optional[str] = _(
        None, "Baseline the untrained sampler reproduces; auto: the best training-free sampler "
        "on validation samples over every grid (or --stride), screened at the start "
        "(search.start). Default: the objective's recipe at this K.", choices=_inits)
    start_from: List[str] = _(
        help="Start from learned coefficients instead of --init's: coefficients.json files of "
        "samplers of this family, K and settings (e.g. finished searches'). A search across "
        "guidance scales takes one per anchor (anchor j starts from file j) or one for all.",
        default_factory=list)
    guidance_scale: Optional[Union[float, List[float]]] = _(
        None, "A class-conditional model (a third input c of labels): the classifier-free "
        "guidance scale w the sampler is searched for (0: the plain conditional model); "
        "unconditional models take none. A list (e.g. 0,1,3): one sampler across the scales, "
        "its coefficients learned at each and interpolated between them, each step at a "
        "scale drawn from their range (served at any w in the range).")
    objective: Optional[str] = _(
        None, "The loss: " + "; ".join(f"{o.name}: {o.summary}"
                                       for o in objectives.all_objectives())
        + f". Default: kid_teacher to K = {FEW_STEPS}, kid above and for a guided search.",
        choices=objectives.names)
    teacher_steps: int = _(100, "--objective=ld3|kid_teacher: the teacher's steps "
                           "(DPM-Solver++(2M)).", lower=1)
    ld3_pairs: int = _(512, "--objective=ld3|kid_teacher: the (x_T, teacher) pairs trained on.",
                       lower=1)
    ld3_radius: float = _(0.1, "--objective=ld3: the soft teacher's ball around x_T, relative "
                          "to |x_T| ~ sqrt(H W C); 0: the plain teacher.", lower=0)
    teacher_weight: float = _(0.1, "--objective=kid_teacher: the weight of the teacher term "
                              "beside the KID loss.", lower=0)
    kernel: str = _("linear", "KID kernel of the loss.", choices=mmd.kernel_names)
    features: str = _("digits", "Feature network of the loss and of FID / KID / IS: digits, "
                      "pixels, or a path to an Inception file.")
    heldout_features: str = _("digits_heldout", "Feature network of the held-out metric (never "
                              "trained against).")
    # Optimisation (paper: Adam 5e-4, default betas, batch 512, 50K steps). 400 steps cannot
    # move sigmoid logits far at 5e-4, so the default takes larger steps and decays them.
    batch_size: Optional[int] = _(None, "Global batch size; default: the objective's recipe at "
                                  "this K.", lower=2)
    train_steps: Optional[int] = _(None, "Optimiser steps; default: the objective's recipe at "
                                   "this K (search.objectives; printed at the start).", lower=1)
    learning_rate: Optional[float] = _(None, "Peak Adam learning rate; default: the "
                                       "objective's recipe at this K.", lower=0)
    lr_decay: str = _("cosine", "Learning-rate schedule over train_steps: cosine to 0, or "
                      "constant (the paper's).", choices=LR_DECAYS)
    select: Optional[str] = _(
        None, "Coefficients kept: best: those of the start or of a periodic evaluation with "
        "the lowest FID on --eval_samples validation samples (noise.VALIDATION_SEED: x_T never "
        "used by the final evaluation or the benchmark); paired: as best, kept only when it "
        "beats the start in 95% of paired bootstrap resamples of those samples "
        "(search.select); last: the last step's (the paper's). Default: the objective's "
        "recipe at this K.",
        choices=SELECTS)
    grad_clip: float = _(1.0, "Global-norm gradient clipping; 0 disables.", lower=0)
    clip_samples: Optional[bool] = _(
        None, "The loss scores the chain's samples (and the teacher's) clipped to the feature "
        "network's data range, as the evaluation and an export do (--noclip_samples: as they "
        "come out of the chain, overshoots included). Default: the objective's recipe at this "
        "K.")
    seed: int = _(0, "Seed of every training batch's noise.", lower=0, upper=MAX_SEED)
    xla: bool = _(True, "XLA-compile the search step.")
    remat: bool = _(True, "Rematerialise network calls (memory flat in K).")
    loop: bool = _(True, "Run the sampling chain as one tf.while_loop, so XLA compiles the "
                   "network once whatever K (--noloop: unrolled, compile time growing with K; "
                   "the same sampler and gradients).")
    precision: str = _("float32", "Arithmetic of the networks in the search step: bfloat16 for "
                       "TPUs / recent GPUs (the sampler, the chain and the loss stay float32; "
                       "ddss_tf.precision). Evaluation and export: float32.", choices=PRECISIONS)
    strategy: str = _("default", "tf.distribute strategy.", choices=strategies.names)
    tpu: str = _("", "TPU name for --strategy=tpu ('local' on a TPU VM / Colab).")
    worker_timeout: int = _(1800, "--strategy=multi_worker: seconds a worker waits for the "
                            "cluster to form, and for any one collective (a peer that hangs), "
                            "before it exits; 0: forever. Must exceed the chief's work while "
                            "the others wait: reference statistics and baselines before "
                            "training, and each periodic evaluation.", lower=0)
    checkpoint_every: int = _(50, "Steps between checkpoints.", lower=1)
    eval_every: Optional[int] = _(None, "Steps between FID / KID evaluations; default: the "
                                  "objective's recipe at this K.", lower=1)
    eval_samples: Optional[int] = _(None, "Samples per periodic evaluation (the evaluation "
                                    "seed's FID curve) and of the baselines beside it; "
                                    "default: the objective's recipe at this K.",
                                    lower=MIN_EVAL_SAMPLES)
    validation_samples: Optional[int] = _(
        None, "Samples of each validation that --select=best|paired chooses the kept "
        "coefficients on (noise.VALIDATION_SEED); default: the objective's recipe at this K.",
        lower=MIN_EVAL_SAMPLES)
    final_samples: int = _(2000, "Samples of the final comparison.", lower=MIN_EVAL_SAMPLES)
    reference: str = _("ode", "The reference row of the final comparison, the quality a fast "
                       "sampler aims for (computed once per model): ode, DPM-Solver++(2M) with "
                       "--reference_steps (the probability-flow ODE's solution); ddpm, ancestral "
                       "DDPM with --reference_steps (capped at the model's T; the papers' "
                       "reference, ten times the cost).", choices=("ode", "ddpm"))
    reference_steps: Optional[int] = _(None, "Steps of the reference; default: 100 for ode, the "
                                       "model's T (1000) for ddpm.", lower=1)

    def __post_init__(self):
        # +PRED is an option of the families that take it (samplers.options): elsewhere it is
        # False, so names, labels and saved configs never carry a +PRED that was not learned.
        if self.family in samplers.names() and "pred" not in samplers.options(self.family):
            self.pred = False
        # Likewise the looped chain, for the families whose steps cannot run in a loop.
        if self.family in samplers.names() and not samplers.loopable(self.family):
            self.loop = False
        # The model's own prediction when none is given (a flow model's is "flow").
        if not self.prediction:
            self.prediction = models.own_prediction(self.model)
        # The default objective and its recipe at this K fill what the search leaves unset;
        # which settings they filled is kept (`resolved`) for the log (not a field: config.json
        # holds the values).
        resolved = []
        if self.objective is None:
            self.objective = self.default_objective()
            resolved.append("objective")
        recipe = default_settings(self.num_steps, self.objective)
        for name in RECIPE_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, recipe[name])
                resolved.append(name)
        if resolved and not getattr(self, "_resolved", None):
            self._resolved = tuple(resolved)
        if self.reference_steps is None:
            self.reference_steps = 100 if self.reference == "ode" else 1000
        if not self.stride and self.family in samplers.names() and self.init != start.AUTO:
            self.stride = samplers.default_stride(self.family, flow=self.prediction == "flow")

    def default_objective(self):
        """The objective of this search when it names none (objectives.default_name)."""
        return objectives.default_name(self.num_steps, guided=self.guidance_scale is not None,
                                       kernel=self.kernel)

    def resolved(self):
        """{name: value} of the settings this config took from its objective's recipe (those
        it was given as None), for the log."""
        return {name: getattr(self, name) for name in getattr(self, "_resolved", ())}

    def recipe_line(self):
        """The line a search prints at its start: every setting it resolved from K."""
        return (f"{self.objective} recipe at K={self.num_steps}: " + ", ".join(
            f"{name}={value}" for name, value in self.resolved().items())
            + " (any of them can be given as a flag)")

    def validate(self, num_replicas=1):
        """Raise ValueError naming the bad field and what is accepted (before any model is
        loaded: a bad setting costs nothing)."""
        from ddss_tf import denoisers
        from ddss_tf.metrics import mmd

        self.__post_init__()  # a field set after construction is normalised too

        for s in settings.describe(SearchConfig):  # nothing non-finite reaches config.json
            value = getattr(self, s.name)
            if s.type is float and value is not None and not (
                    isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{s.name} must be a finite number, got {value!r}")
        objective = objectives.get(self.objective)
        objective.validate(self)
        objective.check_family(self, objectives.all_objectives())
        inits = samplers.inits(self.family)
        if inits and self.init not in inits + (start.AUTO,):
            raise ValueError(f"init {self.init!r} does not apply to the {self.family} family; "
                             f"accepted: {', '.join(inits + (start.AUTO,))}")
        if self.init in samplers.solver_names() and not self.pred:
            raise ValueError(f"init {self.init!r} needs pred (+PRED, --pred): without it x0_hat "
                             "comes from Theorem 1's marginals, which are not the solver's")
        if self.stride not in samplers.stride_names() and not (
                self.init == start.AUTO and not self.stride):
            raise ValueError(f"unknown stride {self.stride!r}; accepted: "
                             f"{', '.join(samplers.stride_names())}")
        if self.kernel not in mmd.kernel_names():
            raise ValueError(f"unknown kernel {self.kernel!r}; accepted: {', '.join(mmd.kernel_names())}")
        if self.strategy not in strategies.names():
            raise ValueError(
                f"unknown strategy {self.strategy!r}; accepted: {', '.join(strategies.names())}")
        positive = ("num_steps", "batch_size", "train_steps", "checkpoint_every", "eval_every",
                    "eval_samples", "validation_samples", "final_samples", "reference_steps")
        if self.reference not in ("ode", "ddpm"):
            raise ValueError(f"unknown reference {self.reference!r}; accepted: ode, ddpm")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"unknown lr_decay {self.lr_decay!r}; accepted: {', '.join(LR_DECAYS)}")
        if self.select not in SELECTS:
            raise ValueError(f"unknown select {self.select!r}; accepted: {', '.join(SELECTS)}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables clipping), got {self.grad_clip}")
        if self.batch_size < 2 * num_replicas or self.batch_size % num_replicas:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of the {num_replicas} replica(s) "
                "with at least 2 samples per replica")
        for name in ("eval_samples", "validation_samples", "final_samples"):
            if getattr(self, name) < MIN_EVAL_SAMPLES:
                raise ValueError(f"{name} must be >= {MIN_EVAL_SAMPLES} (the Inception Score "
                                 f"splits its samples in 10), got {getattr(self, name)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, 2**63 - 1], got {self.seed}")
        if self.prediction not in denoisers.predictions():
            raise ValueError(f"unknown prediction {self.prediction!r}; accepted: "
                             f"{', '.join(denoisers.predictions())}")
        if not 2 <= self.num_timesteps <= MAX_TIMESTEPS:
            raise ValueError(f"num_timesteps must be in [2, {MAX_TIMESTEPS}], got "
                             f"{self.num_timesteps}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; accepted: "
                             f"{', '.join(PRECISIONS)}")
        if self.worker_timeout < 0:
            raise ValueError(f"worker_timeout must be >= 0 seconds (0: wait forever), got "
                             f"{self.worker_timeout}")
        if self.image_size < 0:
            raise ValueError(f"image_size must be >= 0 (0: the model's own), got {self.image_size}")
        if self.guidance_scale is not None:
            scales = self.guidance_scale if isinstance(self.guidance_scale, (list, tuple)) \
                else [self.guidance_scale]
            if not all(isinstance(w, (int, float)) and 0 <= w < float("inf") for w in scales):
                raise ValueError(f"guidance_scale must be a number >= 0 (0: the plain conditional "
                                 f"model) or a list of them, got {self.guidance_scale}")
            if len(scales) > 1 and not all(a < b for a, b in zip(scales, scales[1:])):
                raise ValueError(f"a list of guidance scales (one sampler across them) must "
                                 f"increase, got {list(scales)}")
            guided = [o.name for o in objectives.all_objectives() if o.guided]
            if not objective.guided or self.precision != "float32":
                raise ValueError(f"a guided search (guidance_scale) takes objective "
                                 f"{' or '.join(guided)} and precision float32, got "
                                 f"{self.objective} and {self.precision}")
        self._validate_start_from()

    def _validate_start_from(self):
        paths = self.start_from
        if not isinstance(paths, (list, tuple)) or not all(isinstance(p, str) for p in paths):
            raise ValueError(f"start_from must be a list of coefficients.json paths, got {paths!r}")
        anchors = self.guidance_anchors()
        if paths and len(paths) not in {1, len(anchors or ())}:
            raise ValueError(f"start_from takes one coefficients.json, or one per guidance anchor "
                             f"({len(anchors)}), got {len(paths)}" if anchors else
                             f"start_from takes one coefficients.json, got {len(paths)}")
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise ValueError(f"start_from: {', '.join(missing)} does not exist (a learned "
                             "sampler's coefficients.json, e.g. a finished search's)")

    def run_name(self):
        """The work directory name ddss_search gives this search:
        [<objective>_]<family>[_pred][_time][_<init>]_k<K>[_w<guidance scale>][_warm][_s<seed>]
        (the objective unless the default one; the init unless "auto" or the family has none;
        warm: start_from; the seed unless 0)."""
        parts = ([self.objective] if self.objective != self.default_objective() else []) + \
            [self.family] + \
            (["pred"] if self.pred else []) + (["time"] if self.time else []) + \
            ([self.init] if self._named_init() else []) + [f"k{self.num_steps}"]
        if self.guidance_scale is not None:
            parts.append("w" + "-".join(f"{w:g}" for w in self.guidance_scales()))
        parts += (["warm"] if self.start_from else []) + ([f"s{self.seed}"] if self.seed else [])
        return "_".join(parts)

    def _named_init(self):
        """Whether the search starts from a baseline it names (its init), which the run's name
        and label then say; an "auto" start is the best training-free sampler, found at run
        time (search.start)."""
        return bool(samplers.inits(self.family)) and self.init != start.AUTO

    def guidance_scales(self):
        """The guidance scales of the search as a tuple: (w,) or the anchors of a sampler
        across scales; None for an unconditional model."""
        w = self.guidance_scale
        if w is None:
            return None
        return tuple(float(v) for v in w) if isinstance(w, (list, tuple)) else (float(w),)

    def guidance_anchors(self):
        """The anchor scales of a sampler across guidance scales, or None (one scale or none)."""
        scales = self.guidance_scales()
        return scales if scales is not None and len(scales) > 1 else None

    def evaluation_scale(self):
        """The guidance scale the search's periodic evaluations and its main records use: the
        search's scale, or the largest anchor (None for an unconditional model)."""
        scales = self.guidance_scales()
        return None if scales is None else scales[-1]

    def label(self):
        """The learned sampler's name in tables, e.g. "DDSS GGDM +PRED +TIME", "LD3 UniPC"
        (the objective's name for its sampler: `Objective.label`)."""
        anchors = self.guidance_anchors()
        ddss = (f"DDSS {samplers.label(self.family)}" + (" +PRED" if self.pred else "")
                + (" +TIME" if self.time else "")
                + (f" across w {anchors[0]:g}..{anchors[-1]:g}" if anchors else "")
                + (f" from {samplers.label(self.init)}" if self._named_init() else "")
                + (" (warm start)" if self.start_from else ""))
        return objectives.get(self.objective).label(self, ddss)

    def build_sampler(self, denoiser, start=None):
        """The learnable sampler layer this search learns, over `denoiser` (not yet trained),
        from its init and stride, or from those of `start` (a search.start.Start: where an
        "auto" init starts)."""
        if start is None and self.init == _AUTO:
            raise ValueError("init 'auto' is chosen by the search's start screen "
                             "(search.start.resolve); give build_sampler its start= or name an init")
        init, stride = (self.init, self.stride) if start is None else (start.init, start.stride)
        return samplers.create(self.family, denoiser, num_steps=self.num_steps,
                               stride=stride, remat=self.remat, loop=self.loop, time=self.time,
                               init=init if samplers.inits(self.family) else None,
                               pred=self.pred, guidance_scales=self.guidance_anchors())

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown search settings {unknown}; accepted: {sorted(known)}")
        return cls(**values)
