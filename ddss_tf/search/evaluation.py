"""Draw samples on fixed seeds and score them: FID, KID, IS and a held-out FID.

The held-out FID uses a *different* feature network from the one the search
optimises (for the digits default: a second, independently trained classifier),
because a sampler trained against one network can game it.
"""

import numpy as np

from ddss_tf import data
from ddss_tf import export
from ddss_tf import models
from ddss_tf import progress as progress_lib
from ddss_tf import samplers
from ddss_tf import metrics
from ddss_tf.search import components

__all__ = ["sample", "Scorer", "EvalSetup", "EVAL_SEED", "BATCH_SIZE"]

# Evaluation noise never overlaps the training noise (which is keyed on the step).
EVAL_SEED = 2_000_003
# Samples per evaluation batch; batch b draws its x_T and noise from EVAL_SEED + b.
BATCH_SIZE = 500


def sample(layer, num_samples, image_shape, seed=EVAL_SEED, batch_size=BATCH_SIZE,
           show_progress=False, desc="sample"):
    """num_samples images from a sampler layer; batch b uses samplers.draw_noise(seed + b).

    The same seed gives the same x_T for every sampler, so grids compare like with like.
    The chain runs eagerly: each network call is already a compiled tf.function, so an
    outer function would only add a trace (seconds at K = 10, minutes at K = 1000) per
    sampler and batch shape. Returns float32 numpy [num_samples, H, W, C].
    """
    batch_size = min(batch_size, num_samples)
    out, num_batches = [], -(-num_samples // batch_size)
    bar = progress_lib.Progress(num_batches, desc=desc) if show_progress else None
    for b in range(num_batches):
        x_T, noise = samplers.draw_noise(seed + b, layer.num_steps, [batch_size] + list(image_shape))
        out.append(layer(x_T, noise).numpy())
        if bar:
            bar.update(b + 1)
    if bar:
        bar.close()
    return np.concatenate(out)[:num_samples]


# Names how Scorer computes its scores, for the caches keyed on them (EvalSetup.inputs_fingerprint).
# 3: KID's blocks take both sets in a canonical random order, not the order given.
SCORER_VERSION = 3


def _in_canonical_random_order(features):
    """The rows of `features` in an order that depends only on their values: sorted, then
    shuffled with a fixed seed.

    KID's block estimator pairs contiguous blocks of the two sets, so every block must be a
    random sample of its set. A data set's own order is not: the digits are stored writer by
    writer, and blocks of them scored every sampler's KID about 0.2 too high, the training
    images themselves included.
    """
    features = np.asarray(features)
    order = np.lexsort(features.T[::-1])
    return features[order[np.random.default_rng(0).permutation(len(order))]]


class Scorer:
    """Scores image sets against reference statistics in two feature spaces.

    Args:
      extractor: the feature network the search optimises (FID, KID; IS from its logits).
      reference: metrics.Statistics of the real data under `extractor`.
      heldout_extractor / heldout_reference: a second feature network and its statistics,
        or None.
    """

    def __init__(self, extractor, reference, heldout_extractor=None, heldout_reference=None):
        self.extractor, self.reference = extractor, reference
        self.heldout_extractor, self.heldout_reference = heldout_extractor, heldout_reference
        self._kid_reference = _in_canonical_random_order(reference.features)

    def __call__(self, images):
        """dict(fid, kid, kid_se, is, heldout_fid) for float images [N, H, W, C] in the data range."""
        images = np.clip(images, *self.extractor.data_range)
        ext = metrics.extract(self.extractor, images, progress=False)
        # Up to 10 blocks (each with >= 2 samples of the smaller set), so the standard
        # error is an estimate over subsets rather than over one or two blocks.
        n, m = len(images), len(self.reference.features)
        block = -(-max(n, m) // max(1, min(10, min(n, m) // 2)))
        kid, kid_se = metrics.kid(_in_canonical_random_order(ext.features), self._kid_reference,
                                  kernel="cubic", block_size=block)
        fid = metrics.fid_from_statistics(*metrics.feature_statistics(ext.features),
                                          self.reference.mean, self.reference.cov)
        result = dict(fid=float(fid), kid=float(kid), kid_se=float(kid_se), num_samples=len(images))
        if ext.logits is not None:
            result["is"] = float(metrics.inception_score(ext.logits, splits=10)[0])
        if self.heldout_extractor is not None:
            held = metrics.extract(self.heldout_extractor, images, progress=False)
            result["heldout_fid"] = float(metrics.fid_from_statistics(
                *metrics.feature_statistics(held.features),
                self.heldout_reference.mean, self.heldout_reference.cov))
        return result


class EvalSetup:
    """The model, the real data and the scorer a config names, resolved once.

    cfg: anything with the SearchConfig fields of the model (models.OPTIONS), dataset,
    split, features and heldout_features. num_steps: the K values that will be sampled, each
    checked against the model's T. Attributes: denoiser, net, model_fingerprint,
    real_images, image_shape, extractor, heldout, reference, heldout_reference, scorer,
    inputs_fingerprint.
    """

    def __init__(self, cfg, log=print, num_steps=()):
        self.denoiser, self.net = components.load_denoiser(**models.options(cfg))
        T = self.denoiser.schedule.num_timesteps
        for k in num_steps:  # before the (possibly long) reference statistics
            if k > T:
                raise ValueError(f"num_steps {k} exceeds the model's T = {T}")
        self.model_fingerprint = export.model_fingerprint(self.net)
        # The real data are fitted to the model's image shape (channels, centre crop, resize).
        self.image_shape = models.image_shape(self.net)
        self.real_images = data.load(cfg.dataset, cfg.split, self.image_shape)
        self.extractor = components.load_extractor(cfg.features)
        self.heldout = components.load_extractor(cfg.heldout_features)
        log("reference statistics ...")
        self.reference, self.heldout_reference = (
            metrics.reference_statistics(ext, cfg.dataset, cfg.split, image_shape=self.image_shape,
                                         images=self.real_images)
            for ext in (self.extractor, self.heldout))
        self.scorer = Scorer(self.extractor, self.reference, self.heldout, self.heldout_reference)
        den = self.denoiser
        # What scores depend on besides the sampler, the network weights and the sample count:
        # the real data (both statistics' fingerprints name dataset, split, count, feature
        # network and, for outside data, an image digest) and how the network is read.
        self.inputs_fingerprint = dict(
            reference=self.reference.fingerprint, heldout=self.heldout_reference.fingerprint,
            schedule=den.schedule.get_config(), prediction=den.prediction, clip_x0=den.clip_x0,
            scorer=SCORER_VERSION)

    def resampled_real(self, num_samples, seed=EVAL_SEED):
        """num_samples of the reference images drawn with replacement (seeded).

        Scored, they are what a model that reproduced its training data exactly would get:
        FID is biased upwards at a finite sample count, so their FID is its floor at
        num_samples, the scale against which samplers' scores are read. (Their KID is not a
        floor: KID is unbiased, and a sample repeating the reference images is not
        independent of them, which biases it low.)
        """
        rng = np.random.default_rng(seed)
        return self.real_images[rng.integers(0, len(self.real_images), int(num_samples))]
