"""Evaluation metrics over precomputed features or logits, in float64 numpy.

  kid:              Kernel Inception Distance (Binkowski et al. 2018) with a standard error,
  fid:              Frechet Inception Distance (Heusel et al. 2017), also from statistics,
  inception_score:  Inception Score (Salimans et al. 2016) over splits.

The feature network is not part of these functions: pass features computed by
any extractor (`features.extract`), or identity features in tests.
"""

import math

import numpy as np
import tensorflow as tf

from ddss_tf.metrics import _checks
from ddss_tf.metrics import mmd

__all__ = ["kid", "fid", "fid_from_statistics", "feature_statistics", "inception_score",
           "paired_fid_confidence", "psd_sqrt"]


def _block_bounds(count, num_blocks):
    """Split range(count) into num_blocks contiguous blocks, sizes v or v + 1, the larger last."""
    small = count // num_blocks
    num_large = count - small * num_blocks
    sizes = [small] * (num_blocks - num_large) + [small + 1] * num_large
    edges = np.concatenate([[0], np.cumsum(sizes)])
    return list(zip(edges[:-1], edges[1:]))


def kid(gen_feats, real_feats, kernel="cubic", block_size=1024):
    """Unbiased KID and its standard error, as tensorflow-gan computes them.

    Both sets are cut, in their given order, into B = ceil(max(n, m) / block_size)
    contiguous blocks of nearly equal size (the block estimator of Zaremba et
    al. 2013, arXiv 1307.1954, used by tensorflow-gan's
    kernel_classifier_distance_and_std). On each block b the unbiased squared
    MMD (`mmd.mmd2`; Binkowski et al. 2018 use the cubic kernel
    k(a, b) = (a.b / d + 1)^3) gives an estimate e_b, and

        KID = mean_b e_b,     SE = std_b(e_b, ddof=1) / sqrt(B).

    With a single block (n, m <= block_size) KID is the unbiased MMD^2 of all
    samples and SE is NaN, exactly as in tensorflow-gan; use a smaller
    block_size to get an error bar. (Binkowski et al.'s own code instead
    reports mean +- std over random subsets of 1,000 samples.) Shuffle the
    features first if their order is meaningful.

    Args:
      gen_feats: [n, d] generated features; real_feats: [m, d] real features.
      kernel: "cubic" (KID) or "linear".
      block_size: largest block; every block needs >= 2 samples of each set.

    Returns:
      (value, standard_error), numpy float64 scalars.
    """
    if kernel not in mmd.kernel_names():
        raise ValueError(f"unknown kernel {kernel!r}; accepted: {', '.join(mmd.kernel_names())}")
    gen, real = _checks.feature_pair(gen_feats, real_feats)
    if int(block_size) < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}")
    num_blocks = math.ceil(max(len(gen), len(real)) / int(block_size))
    if min(len(gen), len(real)) < 2 * num_blocks:
        raise ValueError(
            f"{num_blocks} blocks of block_size {block_size} leave fewer than 2 samples per block "
            f"for the smaller set ({min(len(gen), len(real))} samples); raise block_size")
    estimates = []
    for (g0, g1), (r0, r1) in zip(_block_bounds(len(gen), num_blocks),
                                  _block_bounds(len(real), num_blocks)):
        value = mmd.mmd2(tf.constant(gen[g0:g1]), tf.constant(real[r0:r1]), kernel)
        estimates.append(float(value.numpy()))
    estimates = np.asarray(estimates, dtype=np.float64)
    if num_blocks == 1:
        return np.float64(estimates[0]), np.float64(np.nan)
    return np.float64(estimates.mean()), np.float64(estimates.std(ddof=1) / math.sqrt(num_blocks))


def feature_statistics(feats, name="features"):
    """(mean [d], covariance [d, d]) of features [N, d], N >= 2, float64, unbiased (ddof=1)."""
    arr = _checks.features(feats, name)
    return arr.mean(axis=0), np.cov(arr, rowvar=False, ddof=1).reshape(arr.shape[1], arr.shape[1])


def psd_sqrt(mat):
    """Symmetric PSD square root by eigendecomposition; eigenvalues below 0 (rounding) -> 0."""
    sym = 0.5 * (mat + mat.T)
    eigvals, eigvecs = np.linalg.eigh(sym)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def _trace_sqrt_product(sigma1, sigma2):
    """Tr((sigma1 sigma2)^(1/2)) for symmetric PSD sigma1, sigma2.

    sigma1 sigma2 has the same eigenvalues as the symmetric PSD matrix
    M = sigma1^(1/2) sigma2 sigma1^(1/2) (similar when sigma1 is invertible,
    equal by continuity otherwise), so Tr((sigma1 sigma2)^(1/2)) = sum_i sqrt(lambda_i(M)).
    Only symmetric eigendecompositions are used, so rank-deficient covariances
    (fewer samples than dimensions) give a finite answer instead of the complex
    or NaN output of a general sqrtm. (tensorflow-gan's trace_sqrt_product uses
    the same identity.)
    """
    root = psd_sqrt(sigma1)
    inner = root @ sigma2 @ root
    eigvals = np.linalg.eigvalsh(0.5 * (inner + inner.T))
    return float(np.sum(np.sqrt(np.clip(eigvals, 0.0, None))))


def _check_statistics(mu, sigma, name):
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{name} statistics must be a mean [d] and a covariance [d, d], got {mu.shape} and {sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"{name} statistics contain NaN or infinite values")
    return mu, sigma


def fid_from_statistics(mu1, sigma1, mu2, sigma2):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (Dowson & Landau 1982):

        FID = |mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^(1/2)),

    in float64, with the stable trace of the matrix square root above.
    Returns a float (numpy float64).
    """
    mu1, sigma1 = _check_statistics(mu1, sigma1, "first")
    mu2, sigma2 = _check_statistics(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature widths differ: {mu1.shape[0]}-d and {mu2.shape[0]}-d statistics")
    diff = mu1 - mu2
    covariance_term = np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2)
    return np.float64(diff @ diff + covariance_term)


def fid(gen_feats, real_feats):
    """FID between feature sets [n, d] and [m, d] (Heusel et al. 2017), float64.

    Means and unbiased (ddof=1) covariances of both sets, then
    `fid_from_statistics`. Like every plug-in FID it is biased upwards for small
    n; compare models only at equal sample counts.
    """
    gen, real = _checks.feature_pair(gen_feats, real_feats)
    return fid_from_statistics(*feature_statistics(gen), *feature_statistics(real))


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def inception_score(logits, splits=10):
    """Inception Score (Salimans et al. 2016) from classifier logits [N, C], float64.

    The N samples are cut, in order, into `splits` parts
    [i N // splits, (i + 1) N // splits) as in the OpenAI reference code. On each
    part, with p(y|x) = softmax(logits) and the marginal p(y) = mean_x p(y|x),

        IS = exp( mean_x KL(p(y|x) || p(y)) ),

    computed in log space (log p(y) = logsumexp_x log p(y|x) - log |part|), so
    classes with vanishing probability do not produce NaN.

    Returns:
      (mean, std) over the splits (std with ddof=0, as the reference code), numpy float64.
    """
    logp = _log_softmax(_checks.features(logits, "logits", min_samples=1))
    if int(splits) != splits or splits < 1:
        raise ValueError(f"splits must be a positive integer, got {splits}")
    splits = int(splits)
    count = len(logp)
    if count < splits:
        raise ValueError(f"inception_score needs at least splits={splits} samples, got {count}")
    scores = []
    for i in range(splits):
        part = logp[i * count // splits:(i + 1) * count // splits]
        peak = part.max(axis=0)
        log_marginal = peak + np.log(np.mean(np.exp(part - peak), axis=0))
        kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)
        scores.append(np.exp(np.mean(kl)))
    scores = np.asarray(scores, dtype=np.float64)
    return np.float64(scores.mean()), np.float64(scores.std())


def paired_fid_confidence(feats_a, feats_b, ref_mean, ref_cov, resamples=200, seed=0):
    """How sure we may be that sampler a has the lower FID than sampler b, from samples drawn
    on the same x_T and noise (row i of feats_a and of feats_b share their noise): the fraction
    of `resamples` paired bootstrap resamples (the same rows of both, drawn with replacement
    with a seeded generator) in which FID(a) < FID(b) against the reference N(ref_mean,
    ref_cov). Pairing removes the noise the two share, so a small real difference shows where
    two independent FIDs would overlap. Returns a float in [0, 1]."""
    a, b = (_checks.features(f, name) for f, name in ((feats_a, "feats_a"), (feats_b, "feats_b")))
    if a.shape != b.shape:
        raise ValueError(f"paired features must have one shape, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(int(resamples)):
        rows = rng.integers(0, len(a), len(a))
        wins += (fid_from_statistics(*feature_statistics(a[rows]), ref_mean, ref_cov)
                 < fid_from_statistics(*feature_statistics(b[rows]), ref_mean, ref_cov))
    return wins / int(resamples)
