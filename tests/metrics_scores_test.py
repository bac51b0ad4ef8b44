"""KID, FID and Inception Score against float64 numpy / scipy references and closed forms."""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.special

from ddss_tf import metrics


# ---------------------------------------------------------------- references
def ref_mmd2(x, y, kernel="cubic"):
    """Unbiased MMD^2 with explicit double loops over index pairs (slow, obviously right)."""
    d = x.shape[1]
    k = (lambda a, b: a @ b) if kernel == "linear" else (lambda a, b: (a @ b / d + 1.0) ** 3)
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2.0 * xy


def ref_block_kid(x, y, block_size, kernel="cubic"):
    """tensorflow-gan's kernel_classifier_distance_and_std_from_activations, in numpy."""
    n_blocks = int(np.ceil(max(len(x), len(y)) / block_size))

    def edges(count):
        v = count // n_blocks
        n_plusone = count - v * n_blocks
        sizes = np.concatenate([np.full(n_blocks - n_plusone, v), np.full(n_plusone, v + 1)])
        return np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    ex, ey = edges(len(x)), edges(len(y))
    ests = np.array([ref_mmd2(x[ex[i]:ex[i + 1]], y[ey[i]:ey[i + 1]], kernel) for i in range(n_blocks)])
    se = np.sqrt(np.sum((ests - ests.mean()) ** 2) / (n_blocks - 1) / n_blocks) if n_blocks > 1 else np.nan
    return ests.mean(), se


def ref_fid(x, y):
    """pytorch-fid / TTUR style FID with scipy's general matrix square root."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)


def ref_inception_score(logits, splits):
    """The OpenAI improved-gan formula on softmax probabilities, with scipy's rel_entr for the KL."""
    p = scipy.special.softmax(logits, axis=1)
    scores = []
    for i in range(splits):
        part = p[i * len(p) // splits:(i + 1) * len(p) // splits]
        py = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(scipy.special.rel_entr(part, py), axis=1))))
    return np.mean(scores), np.std(scores)


def features(seed, n, m, d, shift=0.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(shift, 1.0, size=(m, d))


# ---------------------------------------------------------------- KID
@pytest.mark.parametrize("kernel", ["cubic", "linear"])
def test_kid_single_block_is_the_full_unbiased_mmd(kernel):
    x, y = features(0, 30, 22, 6, shift=0.2)
    value, se = metrics.kid(x, y, kernel=kernel)
    assert isinstance(value, np.float64) and isinstance(se, np.float64)
    np.testing.assert_allclose(value, ref_mmd2(x, y, kernel), rtol=1e-12)
    assert np.isnan(se)  # one block: no error bar, as in tensorflow-gan


@pytest.mark.parametrize("n, m, block_size", [(70, 70, 10), (83, 57, 20), (41, 64, 16)])
def test_kid_blocks_and_standard_error_match_tfgan_reference(n, m, block_size):
    x, y = features(1, n, m, 5, shift=0.3)
    value, se = metrics.kid(x, y, block_size=block_size)
    ref_value, ref_se = ref_block_kid(x, y, block_size)
    np.testing.assert_allclose([value, se], [ref_value, ref_se], rtol=1e-11)
    assert se > 0


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    x, y = features(2, 600, 600, 8)
    value, se = metrics.kid(x, y, block_size=100)
    assert abs(value) < 4 * se
    x, y = features(3, 600, 600, 8, shift=0.5)
    value, se = metrics.kid(x, y, block_size=100)
    assert value > 10 * se


# ---------------------------------------------------------------- FID
def test_fid_matches_scipy_sqrtm_reference():
    x, y = features(4, 300, 250, 12, shift=0.1)
    y = y @ np.random.default_rng(5).normal(size=(12, 12)) / 3.0  # correlated, non-commuting covariances
    value = metrics.fid(x, y)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, ref_fid(x, y), rtol=1e-9)


def test_fid_gaussian_closed_forms():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    # Scaled covariance c^2 sigma: FID = |mu1 - mu2|^2 + (1 - c)^2 tr(sigma).
    c = 1.7
    np.testing.assert_allclose(metrics.fid_from_statistics(mu1, sigma, mu2, c * c * sigma),
                               np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(sigma), rtol=1e-10)
    # Diagonal (commuting) covariances: sum_i (sqrt(s1_i) - sqrt(s2_i))^2.
    s1, s2 = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    np.testing.assert_allclose(metrics.fid_from_statistics(mu1, np.diag(s1), mu1, np.diag(s2)),
                               np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2), rtol=1e-10)
    # 2x2, non-commuting: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for M with positive eigenvalues.
    b1, b2 = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
    p1, p2 = b1 @ b1.T + 0.2 * np.eye(2), b2 @ b2.T + 0.2 * np.eye(2)
    prod = p1 @ p2
    trace_sqrt = np.sqrt(np.trace(prod) + 2 * np.sqrt(np.linalg.det(prod)))
    np.testing.assert_allclose(metrics.fid_from_statistics(mu1[:2], p1, mu2[:2], p2),
                               np.sum((mu1[:2] - mu2[:2]) ** 2) + np.trace(p1 + p2) - 2 * trace_sqrt,
                               rtol=1e-10)


def test_fid_of_identical_sets_is_zero_also_when_rank_deficient():
    for n, d in [(200, 10), (10, 32)]:
        x = np.random.default_rng(n).normal(size=(n, d))
        scale = np.trace(np.cov(x, rowvar=False))
        assert abs(metrics.fid(x, x)) < 1e-6 * scale


def test_fid_rank_deficient_is_finite_and_matches_eigenvalue_reference():
    """n < d: both covariances singular. Reference: tr sqrt(S1 S2) = sum sqrt(eig(S1 S2))."""
    x, y = features(7, 9, 12, 30, shift=0.4)
    x[:, 0] = 1.0  # a constant feature as well
    value = metrics.fid(x, y)
    assert np.isfinite(value)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    eig = np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)
    ref = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(eig))
    np.testing.assert_allclose(value, ref, rtol=1e-6)
    assert value >= 0


# ---------------------------------------------------------------- Inception Score
@pytest.mark.parametrize("splits", [1, 3, 10])
def test_inception_score_matches_direct_formula(splits):
    logits = np.random.default_rng(8).normal(0, 3, size=(103, 10))
    mean, std = metrics.inception_score(logits, splits=splits)
    ref_mean, ref_std = ref_inception_score(logits, splits)
    np.testing.assert_allclose([mean, std], [ref_mean, ref_std], rtol=1e-10, atol=1e-12)


def test_inception_score_closed_forms():
    # Every sample predicts the same distribution: IS = 1.
    mean, std = metrics.inception_score(np.tile(np.arange(5.0), (40, 1)), splits=4)
    np.testing.assert_allclose([mean, std], [1.0, 0.0], atol=1e-12)
    # Confident predictions spread evenly over C classes: IS = C. Huge logits must not give NaN.
    labels = np.arange(60) % 6
    mean, std = metrics.inception_score(1e4 * np.eye(6)[labels], splits=10)
    np.testing.assert_allclose([mean, std], [6.0, 0.0], atol=1e-9)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("metric", [metrics.kid, metrics.fid])
def test_bad_features_raise_one_clear_value_error(metric):
    x, y = features(9, 20, 20, 4)
    with pytest.raises(ValueError, match="generated features are 4-d, real features are 3-d"):
        metric(x, y[:, :3])
    with pytest.raises(ValueError, match="generated features needs at least 2 samples, got 1"):
        metric(x[:1], y)
    bad = y.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="real features contains NaN or infinite values"):
        metric(x, bad)
    with pytest.raises(ValueError, match=r"must have shape \[N, d\]"):
        metric(x[None], y)


def test_bad_kid_options_and_logits():
    x, y = features(10, 20, 5, 4)
    with pytest.raises(ValueError, match="raise block_size"):
        metrics.kid(x, y, block_size=4)
    with pytest.raises(ValueError, match="unknown kernel"):
        metrics.kid(x, y, kernel="gaussian")
    with pytest.raises(ValueError, match="at least splits=10 samples, got 5"):
        metrics.inception_score(y, splits=10)
    with pytest.raises(ValueError, match="logits contains NaN"):
        metrics.inception_score(np.full((20, 3), math.inf))
    with pytest.raises(ValueError, match="first statistics must be a mean"):
        metrics.fid_from_statistics(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
