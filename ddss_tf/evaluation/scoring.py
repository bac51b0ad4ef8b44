"""Score image sets: FID, KID, IS in the feature space a search optimises, and a held-out FID.

The held-out FID uses a *different* feature network from the one the search
optimises (for the digits default: a second, independently trained classifier),
because a sampler trained against one network can game it.
"""

import os

import numpy as np
import tensorflow as tf

from ddss_tf import metrics, pretrained
from ddss_tf.evaluation import records
from ddss_tf.metrics import conditional

__all__ = ["Scorer", "SCORER_VERSION", "checked_scores", "load_extractor"]


# Names how Scorer computes its scores, for the caches keyed on them (Evaluator.inputs_fingerprint).
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
      real_labels: int [N], the labels of the reference images (in the order of
        reference.features), for scoring class-conditional samples.
    """

    def __init__(self, extractor, reference, heldout_extractor=None, heldout_reference=None,
                 real_labels=None):
        self.extractor, self.reference = extractor, reference
        self.real_labels = None if real_labels is None else np.asarray(real_labels)
        self.heldout_extractor, self.heldout_reference = heldout_extractor, heldout_reference
        self._kid_reference = _in_canonical_random_order(reference.features)

    def __call__(self, images, labels=None):
        """dict(fid, kid, kid_se, is, heldout_fid) for float images [N, H, W, C] in the data range.

        With the labels the images were generated for (a class-conditional model), also
        class_fid and class_kid (each class against the reference images of that class,
        averaged over the classes) and heldout_accuracy (how often the held-out classifier
        sees the requested label)."""
        images, ext = self._extract(images)
        # Up to 10 blocks (each with >= 2 samples of the smaller set), so the standard
        # error is an estimate over subsets rather than over one or two blocks.
        n, m = len(images), len(self.reference.features)
        block = -(-max(n, m) // max(1, min(10, min(n, m) // 2)))
        kid, kid_se = metrics.kid(_in_canonical_random_order(ext.features), self._kid_reference,
                                  kernel="cubic", block_size=block)
        result = dict(fid=_fid(ext.features, self.reference), kid=float(kid),
                      kid_se=float(kid_se), num_samples=len(images))
        if ext.logits is not None:
            result["is"] = float(metrics.inception_score(ext.logits, splits=10)[0])
        if self.heldout_extractor is not None:
            held = metrics.extract(self.heldout_extractor, images, progress=False)
            result["heldout_fid"] = _fid(held.features, self.heldout_reference)
        if labels is not None:
            result.update(self._conditional(ext.features, labels,
                                            held if self.heldout_extractor else None))
        return result

    def ranking(self, images):
        """dict(fid, kid) of float images for ranking samplers against each other on a few
        hundred samples: FID, and KID as the unbiased squared MMD (cubic kernel) of all the
        samples in one block. `__call__` cuts KID into blocks for a standard error, which
        costs the estimate accuracy; a ranking needs no error bar."""
        feats = self._extract(images)[1].features
        n = max(len(feats), len(self.reference.features))
        kid, _ = metrics.kid(feats, self.reference.features, kernel="cubic", block_size=n)
        return dict(fid=_fid(feats, self.reference), kid=float(kid))

    def fid(self, images):
        """(FID, features [N, d]) of float images under the extractor: what a paired
        comparison of two samplers on the same noise needs (metrics.paired_fid_confidence)."""
        features = self._extract(images)[1].features
        return _fid(features, self.reference), features

    def _extract(self, images):
        """(images clipped to the extractor's data range, their metrics.extract result)."""
        images = np.clip(images, *self.extractor.data_range)
        return images, metrics.extract(self.extractor, images, progress=False)

    def _conditional(self, features, labels, held):
        if self.real_labels is None:
            raise ValueError("scoring class-conditional samples needs the reference's labels "
                             "(Scorer real_labels)")
        labels = np.asarray(labels)
        out = {}
        if held is not None and held.logits is not None:
            out["heldout_accuracy"] = conditional.accuracy(held.logits, labels)
        # Per class where a class has the two samples a covariance needs (all of them but in
        # the smallest evaluations).
        counts = np.bincount(labels)
        scored = counts[labels] >= 2
        if scored.any():
            f, lab, ref = features[scored], labels[scored], self.reference.features
            out.update(class_fid=conditional.per_class_fid(f, lab, ref, self.real_labels)[0],
                       class_kid=conditional.per_class_kid(f, lab, ref, self.real_labels)[0])
        return out


def _fid(features, reference):
    """FID of features [N, d] against a metrics.Statistics."""
    return float(metrics.fid_from_statistics(*metrics.feature_statistics(features),
                                             reference.mean, reference.cov))


def checked_scores(scores, label):
    """scores, after refusing non-finite ones (FloatingPointError naming the sampler): a NaN
    never reaches a table, a cache or results.json. KID's standard error is undefined (None)
    with a single block."""
    bad = [k for k in records.METRICS
           if scores.get(k) is not None and not np.isfinite(scores[k])]
    if bad:
        raise FloatingPointError(f"{label}: {', '.join(bad)} not finite "
                                 f"({', '.join(f'{k} = {scores[k]}' for k in bad)}); its samples "
                                 "hold NaN / Inf (the model or the sampler's coefficients)")
    se = scores.get("kid_se")
    return dict(scores, kid_se=None) if se is not None and not np.isfinite(se) else scores


def _pixels():
    def fn(images):
        return tf.reshape(images, [tf.shape(images)[0], -1])

    return metrics.from_function(fn, "pixels")


def load_extractor(name):
    """A metrics.FeatureExtractor: "digits", "digits_heldout", "pixels", or a path to an
    Inception file (see metrics.load_inception)."""
    if name == "digits":
        return pretrained.digits_features()
    if name == "digits_heldout":
        return pretrained.digits_heldout_features()
    if name == "pixels":
        return _pixels()
    if os.path.exists(name):
        return metrics.load_inception(name)
    raise ValueError(f"unknown feature network {name!r}; accepted: digits, digits_heldout, "
                     "pixels, or a path to an Inception file")
