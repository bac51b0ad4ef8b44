"""Class-conditional metrics against per-class float64 numpy loops (scipy's sqrtm for FID)."""

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from ddss_tf.metrics import conditional, mmd


def _data(seed=0, n=300, m=400, d=6, classes=4):
    rng = np.random.default_rng(seed)
    gen_labels = rng.integers(0, classes, n)
    real_labels = rng.integers(0, classes, m)
    shift = rng.standard_normal((classes, d))
    gen = rng.standard_normal((n, d)) + 1.2 * shift[gen_labels]
    real = rng.standard_normal((m, d)) * 1.1 + shift[real_labels]
    return gen, gen_labels, real, real_labels


def _fid_np(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def _kid_loss_np(x, y, kernel):
    k = (lambda a, b: a @ b.T) if kernel == "linear" else (
        lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3)
    gram = k(x, x)
    n = len(x)
    return (gram.sum() - np.trace(gram)) / (n * (n - 1)) - 2 * k(x, y).mean()


def test_per_class_fid_and_kid_average_the_classes():
    gen, gl, real, rl = _data()
    mean, per = conditional.per_class_fid(gen, gl, real, rl)
    want = {c: _fid_np(gen[gl == c], real[rl == c]) for c in range(4)}
    assert sorted(per) == [0, 1, 2, 3]
    for c in want:
        assert per[c] == pytest.approx(want[c], rel=1e-8)
    assert mean == pytest.approx(np.mean(list(want.values())), rel=1e-8)
    # Per-class FID sees what the pooled FID cannot: swapping two classes' labels.
    swapped = np.where(gl == 0, 1, np.where(gl == 1, 0, gl))
    assert conditional.per_class_fid(gen, swapped, real, rl)[0] > mean + 1.0
    kid_mean, kid_per = conditional.per_class_kid(gen, gl, real, rl)
    for c in range(4):
        g, r = gen[gl == c], real[rl == c]
        gram = lambda a, b: (a @ b.T / 6 + 1) ** 3  # noqa: E731
        want_c = ((gram(g, g).sum() - np.trace(gram(g, g))) / (len(g) * (len(g) - 1))
                  + (gram(r, r).sum() - np.trace(gram(r, r))) / (len(r) * (len(r) - 1))
                  - 2 * gram(g, r).mean())
        assert kid_per[c] == pytest.approx(want_c, rel=1e-6)
    assert kid_mean == pytest.approx(np.mean(list(kid_per.values())), rel=1e-12)


def test_accuracy_and_bad_input():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.5, 0.2], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    assert conditional.accuracy(logits, [0, 1, 1, 0]) == 0.75
    with pytest.raises(ValueError, match="one label per row"):
        conditional.accuracy(logits, [0, 1])
    gen, gl, real, rl = _data(n=20)
    gl[:] = 0
    gl[0] = 3  # one sample of class 3
    with pytest.raises(ValueError, match="class 3 has 1 generated and .* at least 2 of each"):
        conditional.per_class_fid(gen, gl, real, rl)
    with pytest.raises(ValueError, match="one label per sample: 20 generated samples with 3"):
        conditional.per_class_fid(gen, gl[:3], real, rl)


@pytest.mark.parametrize("kernel", ["linear", "cubic"])
def test_per_class_kid_loss_is_the_mean_of_each_class_kid_loss(kernel):
    gen, gl, real, rl = _data(1, n=40, m=60, classes=5)
    gl[gl == 4] = 3  # class 4 absent from the batch: not scored
    gl[np.flatnonzero(gl == 2)[1:]] = 1  # class 2 with one sample: not scored
    got = conditional.per_class_kid_loss(tf.constant(gen), gl, real, rl, 5, kernel)
    want = np.mean([_kid_loss_np(gen[gl == c], real[rl == c], kernel) for c in (0, 1, 3)])
    assert float(got) == pytest.approx(want, rel=1e-9)
    # Its gradient is the per-class losses' (class means of the real data suffice, linear).
    x = tf.Variable(gen)
    with tf.GradientTape() as tape:
        loss = conditional.per_class_kid_loss(x, gl, real, rl, 5, kernel)
    grad = tape.gradient(loss, x).numpy()
    with tf.GradientTape() as tape:
        parts = [mmd.kid_loss(tf.boolean_mask(x, gl == c), real[rl == c], kernel)
                 for c in (0, 1, 3)]
        ref = tf.add_n(parts) / 3.0
    np.testing.assert_allclose(grad, tape.gradient(ref, x).numpy(), rtol=1e-9, atol=1e-12)
    if kernel == "linear":
        means = np.stack([real[rl == c].mean(0) for c in range(5)])
        by_means = conditional.per_class_kid_loss(tf.constant(gen), gl, means, np.arange(5), 5)
        assert float(by_means) == pytest.approx(want, rel=1e-9)
