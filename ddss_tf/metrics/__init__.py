"""Sample-quality metrics and the feature networks behind them.

Loss (differentiable TensorFlow, `mmd`):
    kid_loss(gen_feats, real_feats, kernel="linear")      the DDSS loss (docs/design.md)
    cross_replica_kid_loss(gen_feats, real_feats, ...)     the same over a strategy's global batch
    mmd2(gen_feats, real_feats, kernel)                    full unbiased squared MMD

Evaluation (float64 numpy, `scores`):
    kid(gen_feats, real_feats, kernel="cubic")  -> (value, standard_error)
    fid(gen_feats, real_feats)                  -> float;  fid_from_statistics(mu1, s1, mu2, s2)
    inception_score(logits, splits=10)          -> (mean, std)

Class-conditional samples (`conditional`): per_class_fid, per_class_kid, accuracy, and the
differentiable per_class_kid_loss (each class against the real data of that class).

Features (`features`, `inception`, `reference`):
    FeatureExtractor: images in the data range -> features [B, d] (+ logits), differentiable
    from_keras_classifier(model), from_function(fn, name), load_inception(path)
    extract(extractor, images) -> Extracted(features, logits) as numpy, in batches
    reference_statistics(extractor, dataset, split) -> Statistics, cached as .npz
"""

from ddss_tf.metrics.features import (
    Extracted,
    FeatureExtractor,
    extract,
    from_function,
    from_keras_classifier,
)
from ddss_tf.metrics.inception import load as load_inception
from ddss_tf.metrics.mmd import cross_replica_kid_loss, kernel_names, kid_loss, mmd2
from ddss_tf.metrics.reference import Statistics, compute_statistics, reference_statistics
from ddss_tf.metrics.scores import (
    feature_statistics,
    fid,
    fid_from_statistics,
    inception_score,
    kid,
    paired_fid_confidence,
)

__all__ = [
    "Extracted",
    "FeatureExtractor",
    "Statistics",
    "compute_statistics",
    "cross_replica_kid_loss",
    "extract",
    "feature_statistics",
    "fid",
    "fid_from_statistics",
    "from_function",
    "from_keras_classifier",
    "inception_score",
    "kernel_names",
    "kid",
    "kid_loss",
    "load_inception",
    "mmd2",
    "paired_fid_confidence",
    "reference_statistics",
]
