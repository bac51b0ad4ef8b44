"""What a search is: the sampler family to learn, the loss, the optimiser and the run's bookkeeping.

`SearchConfig()` with no arguments is the main job: GGDM +PRED +TIME with K = 10
on the bundled digits DDPM, linear-kernel KID in the bundled classifier's
feature space, sized to finish within minutes on a laptop CPU.
"""

import dataclasses
import json
import os
from typing import List, Optional, Union

from ddss_tf import noise, samplers
from ddss_tf.precision import PRECISIONS
from ddss_tf.samplers import ggdm
from ddss_tf.schedules import MAX_TIMESTEPS
from ddss_tf.search import objectives, strategies
from ddss_tf.search.objectives import FEW_STEPS

__all__ = ["SearchConfig", "default_optimisation", "default_select", "FEW_STEPS", "LR_DECAYS",
           "SELECTS", "MIN_EVAL_SAMPLES", "MAX_SEED"]

LR_DECAYS = ("cosine", "constant")
# Which coefficients a search keeps: its last step's, or the best on validation samples
# (SearchConfig.select).
SELECTS = ("last", "best")
MIN_EVAL_SAMPLES = 10  # the Inception Score's 10 splits; KID and FID need fewer
MAX_SEED = noise.MAX_SEED  # the training noise is keyed on (seed, step) as int64


def _objective(name):
    """The registered objective `name`, or the base class's defaults for an unknown name
    (refused by `validate`, not by the constructor)."""
    return objectives.find(name) or objectives.Objective()


def default_optimisation(num_steps, objective="kid"):
    """(train_steps, learning_rate) of a search that gives neither, at K = num_steps
    (`objectives.Objective.default_optimisation`)."""
    return _objective(objective).default_optimisation(num_steps)


def default_select(objective="kid"):
    """The coefficients a search that does not say keeps (`Objective.default_select`)."""
    return _objective(objective).default_select()


@dataclasses.dataclass
class SearchConfig:
    # The sampler family (DESIGN section 3).
    family: str = "ggdm"
    num_steps: int = 10
    stride: str = ""  # "": the family's default (quadratic; logsnr_uniform for the ODE solvers)
    pred: bool = True
    time: bool = True
    # The paper starts every family at DDPM; with a budget of minutes, DDIM(eta=0) is the better
    # start (the runs behind the defaults are tabled in docs/ddss_search.md).
    init: str = "ddim"
    # Start from learned coefficients instead of init's: coefficients.json files of samplers
    # of this family, K and settings (e.g. finished searches' files). A search across guidance
    # scales takes one per anchor (anchor j starts from file j: the searches made at each
    # scale) or one for every anchor (samplers.Sampler.start_from).
    start_from: List[str] = dataclasses.field(default_factory=list)
    # The model and the data it was trained on ("digits" = the bundled model and data). A model
    # brought as a Keras file, SavedModel or TF1 checkpoint names its schedule ("" = the model's
    # own) and what it predicts (ddss_tf.models); a TF1 checkpoint also its image size or a
    # released model's preset, and whether its EMA weights are used. A dataset may be a tfds
    # name, image folder or .npz (ddss_tf.data), fitted to the model's image shape.
    model: str = "digits"
    schedule: str = ""
    num_timesteps: int = 1000
    prediction: str = "eps"
    model_preset: str = ""
    image_size: int = 0
    ema: bool = True
    dataset: str = "digits"
    split: str = "train"
    # A class-conditional model is searched at this classifier-free guidance scale w (0: the
    # plain conditional model; ddss_tf.guidance); None for an unconditional model. A list of 2
    # or more increasing scales searches one sampler across them (`guidance_anchors`): its
    # coefficients are learned at each and interpolated between, each step at a scale drawn
    # from their range; it is evaluated at the largest during the search and at each at the end.
    guidance_scale: Optional[Union[float, List[float]]] = None
    # The loss (search.objectives): "kid", KID in the feature space of `features` (DESIGN
    # section 4); "ld3", LD3's soft-teacher distance to a teacher_steps-step DPM-Solver++(2M)
    # from the same x_T over ld3_pairs fixed pairs, in a ball of radius ld3_radius * sqrt(H W C),
    # which learns only the times (time=True) of a training-free ODE solver; "kid_teacher", the
    # KID loss plus teacher_weight times the distance to that teacher on the same pairs (no
    # ball), for the KID families.
    objective: str = "kid"
    teacher_steps: int = 100
    ld3_pairs: int = 512
    ld3_radius: float = 0.1
    teacher_weight: float = 0.1
    kernel: str = "linear"
    features: str = "digits"
    heldout_features: str = "digits_heldout"
    # Optimisation (paper: Adam 5e-4, default betas, batch 512, 50K steps). 400 steps cannot
    # move sigmoid logits far at 5e-4, so the default takes larger steps and decays them.
    # train_steps and learning_rate None: the default at this K and objective
    # (`default_optimisation`).
    batch_size: int = 128
    train_steps: Optional[int] = None
    learning_rate: Optional[float] = None
    lr_decay: str = "cosine"  # "cosine" (to 0 at train_steps) or "constant" (the paper's)
    # The coefficients the search keeps: the last step's ("last", the paper's), or ("best") those
    # of the start or of a periodic evaluation (every eval_every steps and the last) whose FID
    # is lowest on eval_samples samples of the validation seed (noise.VALIDATION_SEED: never
    # the evaluation's x_T, so the final scores stay unbiased by the choice). None: the
    # objective's default (`default_select`).
    select: Optional[str] = None
    grad_clip: float = 1.0
    seed: int = 0
    xla: bool = True
    remat: bool = True
    # The chain as one tf.while_loop: XLA compiles the network once whatever K (unrolled, its
    # compile time grows with K); the same sampler and gradients (samplers.base).
    loop: bool = True
    # The networks' arithmetic in the search step: float32, or bfloat16 for accelerators (the
    # sampler, the chain's accumulation and the loss stay float32; ddss_tf.precision).
    precision: str = "float32"
    # Distribution.
    strategy: str = "default"
    tpu: str = ""
    # multi_worker: how long a worker waits for the cluster to form and for any one collective
    # (a peer that hangs) before it exits with one line; 0 waits forever.
    worker_timeout: int = 1800
    # Bookkeeping.
    checkpoint_every: int = 50
    eval_every: int = 100
    eval_samples: int = 512
    final_samples: int = 2000
    reference_steps: int = 1000

    def __post_init__(self):
        # +PRED is an option of the families that take it (samplers.options): elsewhere it is
        # False, so names, labels and saved configs never carry a +PRED that was not learned.
        if self.family in samplers.names() and "pred" not in samplers.options(self.family):
            self.pred = False
        # Likewise the looped chain, for the families whose steps cannot run in a loop.
        if self.family in samplers.names() and not samplers.loopable(self.family):
            self.loop = False
        if not self.stride and self.family in samplers.names():
            self.stride = samplers.default_stride(self.family)
        steps, lr = default_optimisation(self.num_steps, self.objective)
        if self.train_steps is None:
            self.train_steps = steps
        if self.learning_rate is None:
            self.learning_rate = lr
        if self.select is None:
            self.select = default_select(self.objective)

    def validate(self, num_replicas=1):
        """Raise ValueError naming the bad field and what is accepted (before any model is
        loaded: a bad setting costs nothing)."""
        from ddss_tf import denoisers
        from ddss_tf.metrics import mmd

        self.__post_init__()  # a field set after construction is normalised too

        objective = objectives.get(self.objective)
        objective.validate(self)
        objective.check_family(self, objectives.all_objectives())
        if samplers.inits(self.family) and self.init not in samplers.inits(self.family):
            raise ValueError(f"init {self.init!r} does not apply to the {self.family} family; "
                             f"accepted: {', '.join(samplers.inits(self.family))}")
        if self.init in ggdm.SOLVER_INITS and not self.pred:
            raise ValueError(f"init {self.init!r} needs pred (+PRED, --pred): without it x0_hat "
                             "comes from Theorem 1's marginals, which are not the solver's")
        if self.stride not in samplers.stride_names():
            raise ValueError(f"unknown stride {self.stride!r}; accepted: "
                             f"{', '.join(samplers.stride_names())}")
        if self.kernel not in mmd.kernel_names():
            raise ValueError(f"unknown kernel {self.kernel!r}; accepted: {', '.join(mmd.kernel_names())}")
        if self.strategy not in strategies.names():
            raise ValueError(
                f"unknown strategy {self.strategy!r}; accepted: {', '.join(strategies.names())}")
        positive = ("num_steps", "batch_size", "train_steps", "checkpoint_every", "eval_every",
                    "eval_samples", "final_samples", "reference_steps")
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
        for name in ("eval_samples", "final_samples"):
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
        [<objective>_]<family>[_pred][_time][_<solver init>]_k<K>[_w<guidance scale>][_warm]
        (no objective for kid; a solver init: ggdm.SOLVER_INITS; warm: start_from)."""
        parts = ([self.objective] if objectives.get(self.objective).run_prefix else []) + \
            [self.family] + \
            (["pred"] if self.pred else []) + (["time"] if self.time else []) + \
            ([self.init] if self._solver_init() else []) + [f"k{self.num_steps}"]
        if self.guidance_scale is not None:
            parts.append("w" + "-".join(f"{w:g}" for w in self.guidance_scales()))
        return "_".join(parts + (["warm"] if self.start_from else []))

    def _solver_init(self):
        """Whether the sampler starts from a training-free solver's coefficients (a GGDM init
        beyond the paper's DDPM / DDIM), which the run's name and label then say."""
        return self.init in ggdm.SOLVER_INITS and self.init in samplers.inits(self.family)

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
                + (f" from {samplers.label(self.init)}" if self._solver_init() else "")
                + (" (warm start)" if self.start_from else ""))
        return objectives.get(self.objective).label(self, ddss)

    def build_sampler(self, denoiser):
        """The learnable sampler layer this search learns, over `denoiser` (not yet trained)."""
        init = self.init if samplers.inits(self.family) else None
        return samplers.create(self.family, denoiser, num_steps=self.num_steps,
                               stride=self.stride, remat=self.remat, loop=self.loop,
                               time=self.time, init=init, pred=self.pred,
                               guidance_scales=self.guidance_anchors())

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown search settings {unknown}; accepted: {sorted(known)}")
        return cls(**values)
