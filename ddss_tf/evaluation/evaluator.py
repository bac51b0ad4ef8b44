"""The Evaluator: what a config names (model, real data, feature networks), resolved once,
and the comparisons every evaluation makes (training-free baselines, the many-step reference)."""

import copy
import hashlib
import json
import os

import numpy as np

from ddss_tf import (data, denoisers, files, guidance as guidance_lib, interrupt, metrics,
                     models, pretrained, samplers, schedules)
from ddss_tf.evaluation import draws, records, scoring

__all__ = ["Evaluator", "BASELINES", "FLOW_BASELINES", "baselines_for", "REFERENCES",
           "read_cache"]

# The many-step references a sampler aims for (Evaluator.reference_scores): kind -> (family,
# options, label). "ddpm": ancestral sampling with every (or reference_steps) step of the model,
# the papers' reference; "ode": DPM-Solver++(2M) with reference_steps steps, the probability-
# flow ODE's solution, what the deterministic samplers converge to, at a tenth of the cost.
REFERENCES = {
    "ddpm": ("ddpm", dict(stride="linear"), "DDPM {steps} steps"),
    "ode": ("dpm_solver_pp_2m", {}, "ODE reference (DPM-Solver++(2M), {steps} steps)"),
}
# The training-free samplers a learned one is compared with at the same K, as in the
# paper's tables: (label, family, options).
BASELINES = (
    ("DDPM linear", "ddpm", dict(stride="linear")),
    ("DDPM quadratic", "ddpm", dict(stride="quadratic")),
    ("DDIM linear", "ddim", dict(stride="linear", eta=0.0)),
    ("DDIM quadratic", "ddim", dict(stride="quadratic", eta=0.0)),
)
# A rectified-flow model's: the samplers flow users have (Euler on KerasHub's / diffusers'
# FlowMatchEulerDiscreteScheduler grid, the multistep solvers on diffusers' flow sigmas) and
# DDPM on the Euler grid. The DDIM code's strides start the chain far from noise on a flow
# (samplers.times).
FLOW_BASELINES = (
    ("DDPM flow_euler", "ddpm", dict(stride="flow_euler")),
    ("Euler flow_euler", "ddim", dict(stride="flow_euler", eta=0.0)),
    ("DPM-Solver++(2M) flow_sigmas", "dpm_solver_pp_2m", dict(stride="flow_sigmas")),
    ("UniPC flow_sigmas", "unipc", dict(stride="flow_sigmas")),
)


def baselines_for(schedule):
    """The training-free samplers a learned one on a model with `schedule` is compared with:
    FLOW_BASELINES on a rectified flow, else BASELINES."""
    return FLOW_BASELINES if schedules.is_flow(schedule) else BASELINES


def read_cache(path, log):
    """A cached JSON score file, or None when there is none or it is damaged (truncated,
    invalid, non-finite): then it is named in the log and recomputed."""
    if not os.path.exists(path):
        return None
    try:
        value = files.read_json(path, "cache file")
    except ValueError as e:
        log(f"  ignoring a damaged cache: {e}; recomputing it")
        return None
    return value if isinstance(value, dict) else None


class Evaluator:
    """The model, the real data and the scorer a config names, resolved once.

    cfg: anything with the SearchConfig fields of the model (models.OPTIONS), dataset,
    split, features, heldout_features and reference_steps. num_steps: the K values that
    will be sampled, each checked against the model's T. log: where progress lines go.

    Attributes: denoiser, net, model_fingerprint, image_shape, real_images, extractor,
    heldout, reference, heldout_reference, scorer, inputs_fingerprint, reference_steps.
    """

    def __init__(self, cfg, log=print, num_steps=()):
        self.log = log
        self.denoiser, self.net = models.load_denoiser(**models.options(cfg))
        scale = getattr(cfg, "guidance_scale", None)
        if isinstance(scale, (list, tuple)):  # a sampler across scales: evaluated at the largest
            scale = max(scale)
        conditional = isinstance(self.denoiser, denoisers.ConditionalDenoiser)
        if conditional and scale is None:
            raise ValueError(f"model {cfg.model!r} is {models.describe(self.denoiser)}: give a "
                             "classifier-free guidance scale (ddss_search / ddss_benchmark "
                             "--guidance_scale=W; 0: the plain conditional model)")
        if scale is not None and not conditional:
            raise ValueError(f"guidance_scale applies to conditional models; model {cfg.model!r} "
                             f"is {models.describe(self.denoiser)}")
        T = self.denoiser.schedule.num_timesteps
        for k in num_steps:  # before the (possibly long) reference statistics
            if k > T:
                raise ValueError(f"num_steps {k} exceeds the model's T = {T}")
        self.reference_kind = getattr(cfg, "reference", "ddpm")
        # Either reference takes at most the model's T steps (a model of T < 100 gets its T).
        self.reference_steps = min(getattr(cfg, "reference_steps", T), T)
        self.model_fingerprint = models.fingerprint(self.net)
        # The real data are fitted to the model's image shape (channels, centre crop, resize).
        self.image_shape = models.image_shape(self.net)
        if self.image_shape is None:
            raise ValueError(f"cannot tell the image shape [H, W, C] of the model {cfg.model!r}: "
                             "its network has no fixed input shape")
        self.real_images, real_labels = data.load_labeled(cfg.dataset, cfg.split,
                                                          self.image_shape)
        # A conditional model: every sampler runs on it guided at `scale` (ddss_tf.guidance),
        # for balanced labels at evaluation; scores are also taken class by class.
        self.guidance, self.real_labels = None, None
        if scale is not None:
            if real_labels is None:
                raise ValueError(f"dataset {cfg.dataset!r} has no labels, which scoring a "
                                 "conditional model's samples class by class needs")
            self.real_labels = real_labels
            self.guidance = guidance_lib.Guidance(self.denoiser, scale, real_labels,
                                                  int(self.denoiser.null_condition))
        self.extractor = scoring.load_extractor(cfg.features)
        self.heldout = scoring.load_extractor(cfg.heldout_features)
        log("reference statistics ...")
        self.reference, self.heldout_reference = (
            metrics.reference_statistics(ext, cfg.dataset, cfg.split, image_shape=self.image_shape,
                                         images=self.real_images)
            for ext in (self.extractor, self.heldout))
        self.scorer = scoring.Scorer(self.extractor, self.reference, self.heldout,
                                     self.heldout_reference, real_labels=self.real_labels)
        den = self.denoiser
        # What scores depend on besides the sampler, the network weights and the sample count:
        # the real data (both statistics' fingerprints name dataset, split, count, feature
        # network and, for outside data, an image digest) and how the network is read.
        self.inputs_fingerprint = dict(
            reference=self.reference.fingerprint, heldout=self.heldout_reference.fingerprint,
            schedule=den.schedule.get_config(), prediction=den.prediction, clip_x0=den.clip_x0,
            scorer=scoring.SCORER_VERSION)
        if self.guidance is not None:  # (unconditional keys stay as they were: caches hold them)
            self.inputs_fingerprint["guidance_scale"] = self.guidance.scale

    def at_guidance_scale(self, scale):
        """This evaluator (the same model, data and feature networks) with every sampler run
        guided at `scale` (a conditional model's only)."""
        if self.guidance is None:
            raise ValueError("at_guidance_scale applies to a conditional model's evaluator")
        other = copy.copy(self)
        other.guidance = guidance_lib.Guidance(self.denoiser, scale, self.real_labels,
                                               self.guidance.num_classes)
        other.inputs_fingerprint = dict(self.inputs_fingerprint, guidance_scale=other.guidance.scale)
        return other

    @property
    def sampling_denoiser(self):
        """The denoiser samplers are built on: the model's, or for a conditional model one
        that runs under `guidance.bound` only (draws binds each batch's labels)."""
        return self.denoiser if self.guidance is None else self.guidance.unbound()

    def sample(self, layer, num_samples, **kwargs):
        """`draws.sample` of the layer at this model's image shape (evaluation seeds)."""
        return draws.sample(layer, num_samples, self.image_shape, guidance=self.guidance,
                            **kwargs)

    def grid_images(self, layer, num_samples, count):
        """`draws.grid_images`: the first `count` of `sample(layer, num_samples)`, alone."""
        return draws.grid_images(layer, self.image_shape, num_samples, count,
                                 guidance=self.guidance)

    def requested_labels(self, num_samples):
        """The labels `sample` draws num_samples samples for (None: an unconditional model)."""
        return None if self.guidance is None else draws.labels(num_samples,
                                                               self.guidance.num_classes)

    def score(self, images, label, labels=None):
        """Checked scores of images (FloatingPointError naming `label` if any is not finite);
        labels: those the images were drawn for (default: `requested_labels`)."""
        if not np.all(np.isfinite(images)):
            raise FloatingPointError(f"{label}: its samples hold NaN / Inf (the model or the "
                                     "sampler's coefficients); nothing scored or written")
        if labels is None:
            labels = self.requested_labels(len(images))
        return scoring.checked_scores(self.scorer(images, labels), label)

    def sample_and_score(self, layer, num_samples, label, show_progress=False):
        """(scores, images) of num_samples samples of `layer` on the evaluation seeds; logs a
        line."""
        imgs = self.sample(layer, num_samples, show_progress=show_progress, desc=label)
        scores = self.score(imgs, label)
        records.log_scores(label, scores, self.log)
        return scores, imgs

    def baseline_layer(self, family, num_steps, **options):
        """A training-free sampler on this model, for evaluation (no rematerialisation)."""
        return samplers.create(family, self.sampling_denoiser, num_steps=num_steps, remat=False,
                               **options)

    def baselines(self, num_steps, num_samples, cache=None, keep_images=False):
        """{label: scores} of the baselines (`baselines_for` the model's schedule) at
        K = num_steps; with keep_images, (scores, {label: images}). Cached in the file `cache`
        (without images)."""
        cached = None if keep_images or cache is None else read_cache(cache, self.log)
        if cached is not None:
            return cached
        self.log(f"baselines at K={num_steps} on {num_samples} samples:")
        scores, images = {}, {}
        with interrupt.phase(f"the baselines at K={num_steps} on {num_samples} samples"):
            for label, family, options in baselines_for(self.denoiser.schedule):
                layer = self.baseline_layer(family, num_steps, **options)
                scores[label], images[label] = self.sample_and_score(layer, num_samples, label)
            if cache is not None:
                files.write_json(cache, scores)
        return (scores, images) if keep_images else scores

    def reference_label(self, steps=None, kind=None):
        """The reference row's name, e.g. "DDPM 1000 steps"."""
        kind = kind or self.reference_kind
        return REFERENCES[kind][2].format(steps=self.reference_steps if steps is None else steps)

    def reference_file(self, steps, num_samples, kind="ddpm"):
        """(file name, key) of the cached scores of the `steps`-step reference of `kind`
        (`REFERENCES`) on num_samples samples.

        The key holds the model's weights digest, the sample count, the evaluation seed, the
        step count and inputs_fingerprint (data, feature networks, schedule, prediction), and
        for a reference other than DDPM its kind; the name hashes it."""
        key = [self.model_fingerprint, num_samples, draws.EVAL_SEED, steps,
               self.inputs_fingerprint] + ([] if kind == "ddpm" else [kind])
        digest = hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]
        return f"{kind}{steps}-{digest}.json", key

    def score_reference(self, steps, num_samples, kind="ddpm"):
        """(scores, images) of the `steps`-step reference of `kind` on the evaluation seeds."""
        family, options, _ = REFERENCES[kind]
        layer = self.baseline_layer(family, steps, **options)
        return self.sample_and_score(layer, num_samples, self.reference_label(steps, kind),
                                     show_progress=True)

    def _reference_dirs(self, cache_dir=None):
        """The directories a cached reference is read from: the user's cache, then the bundled
        models' shipped entries."""
        return [cache_dir or metrics.reference.default_cache_dir()] + [
            os.path.join(pretrained.asset_dir(name), "reference")
            for name in pretrained.BUNDLED_DDPMS.values()]

    def reference_cached(self, num_samples):
        """Whether the config's reference row on num_samples samples is cached (free)."""
        name, _ = self.reference_file(self.reference_steps, num_samples, self.reference_kind)
        return any(os.path.exists(os.path.join(d, name)) for d in self._reference_dirs())

    def reference_scores(self, num_samples, steps=None, cache_dir=None, return_images=False,
                         kind=None):
        """Scores of the reference (kind: the config's `reference`, "ddpm" or "ode";
        steps: its reference_steps), the quality a fast sampler aims for, cached per model.

        Computed once per model, sample count and feature networks (DDPM with all 1,000 steps
        took about 7 minutes for 2,000 digits on 2 CPU cores; the ODE reference's 100 steps a
        tenth of that) and reused by every search. The bundled digits DDPMs ship their entries
        in assets/<model>/reference/ (made by tools/bundled_model_report.py and from the
        benchmark's cache); any other model, count or feature network is computed here.
        With return_images, returns (scores, images), images None when the scores were cached.
        """
        kind = kind or self.reference_kind
        steps = self.reference_steps if steps is None else steps
        name, key = self.reference_file(steps, num_samples, kind)
        cache_dir = cache_dir or metrics.reference.default_cache_dir()
        for directory in self._reference_dirs(cache_dir):
            scores = read_cache(os.path.join(directory, name), self.log)
            if scores is not None:
                return (scores, None) if return_images else scores
        path = os.path.join(cache_dir, name)
        label = self.reference_label(steps, kind)
        self.log(f"{label} on {num_samples} samples (once per model; cached in {path}):")
        with interrupt.phase(f"the many-step reference ({label})"):
            scores, images = self.score_reference(steps, num_samples, kind)
            os.makedirs(cache_dir, exist_ok=True)
            files.write_json(path, dict(scores, key=key))
        return (scores, images) if return_images else scores

    def score_resampled_real(self, num_samples):
        """(scores, images) of `resampled_real(num_samples)`: FID's floor at num_samples. KID is
        None: it is unbiased (its floor is 0), and a sample repeating the reference set's own
        images is not independent of it, which biases it low."""
        images, labels = self.resampled_real(num_samples, with_labels=True)
        return dict(self.scorer(images, labels), kid=None, kid_se=None), images

    def resampled_real(self, num_samples, seed=draws.EVAL_SEED, with_labels=False):
        """num_samples of the reference images drawn with replacement (seeded).

        Scored, they are what a model that reproduced its training data exactly would get:
        FID is biased upwards at a finite sample count, so their FID is its floor at
        num_samples, the scale against which samplers' scores are read. (Their KID is not a
        floor: KID is unbiased, and a sample repeating the reference images is not
        independent of them, which biases it low.)
        """
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, len(self.real_images), int(num_samples))
        if not with_labels:
            return self.real_images[idx]
        return self.real_images[idx], None if self.real_labels is None else self.real_labels[idx]
