"""Reference statistics: computed in batches, cached with a fingerprint, reused or recomputed."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import data, metrics


class CountingFeatures:
    """Differentiable toy features of digits images that count the batches they see."""

    def __init__(self, scale=1.0):
        self.calls = 0
        self.w = tf.constant(np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32) * scale)

    def __call__(self, images):
        self.calls += 1
        return tf.tanh(tf.matmul(tf.reshape(images, [tf.shape(images)[0], -1]), self.w))

    def extractor(self, fingerprint):
        return metrics.from_function(self, "toy", image_shape=(8, 8, 1),
                                     logits_fn=lambda x: self(x)[:, :3], fingerprint=fingerprint)


def test_statistics_are_computed_in_batches_cached_and_reused(tmp_path, capsys):
    toy = CountingFeatures()
    stats = metrics.reference_statistics(toy.extractor("toy-v1"), "digits", "heldout", count=100,
                                         batch_size=32, cache_dir=tmp_path)
    assert toy.calls == 2 * 4  # features and logits, 4 batches of <= 32
    assert "toy features 100/100" in capsys.readouterr().err  # the progress bar
    images = data.load("digits", "heldout")[:100]
    feats = toy(images).numpy().astype(np.float64)
    np.testing.assert_allclose(stats.features, feats, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats.mean, feats.mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(stats.cov, np.cov(feats, rowvar=False), rtol=1e-5, atol=1e-7)
    assert stats.mean.dtype == np.float64 and stats.logits.shape == (100, 3)
    path = tmp_path / "digits-heldout-toy.npz"
    assert path.exists()
    with np.load(path) as npz:
        assert json.loads(str(npz["fingerprint"])) == {
            "dataset": "digits", "split": "heldout", "features": "toy-v1", "count": 100, "version": 1}

    toy.calls = 0
    again = metrics.reference_statistics(toy.extractor("toy-v1"), "digits", "heldout", count=100,
                                         cache_dir=tmp_path, progress=False)
    assert toy.calls == 0
    for a, b in zip(again[:4], stats[:4]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("change", ["count", "network", "split"])
def test_a_different_fingerprint_recomputes(tmp_path, change):
    toy = CountingFeatures()
    metrics.reference_statistics(toy.extractor("toy-v1"), "digits", "heldout", count=50,
                                 cache_dir=tmp_path, progress=False)
    toy.calls = 0
    kwargs = dict(count=50, split="heldout", fingerprint="toy-v1")
    kwargs.update({"count": {"count": 60}, "network": {"fingerprint": "toy-v2"},
                   "split": {"split": "train"}}[change])
    stats = metrics.reference_statistics(toy.extractor(kwargs.pop("fingerprint")), "digits",
                                         cache_dir=tmp_path, progress=False, **kwargs)
    assert toy.calls > 0
    assert len(stats.features) == kwargs["count"]


def test_images_the_caller_loaded_are_not_read_again(tmp_path, monkeypatch):
    ext = CountingFeatures().extractor("v1")
    want = metrics.reference_statistics(ext, "digits", "heldout", cache_dir=tmp_path / "a",
                                        progress=False)
    images = data.load("digits", "heldout")

    def no_load(*args, **kwargs):
        raise AssertionError("data.load was called although the images were given")

    monkeypatch.setattr(data, "load", no_load)
    got = metrics.reference_statistics(ext, "digits", "heldout", cache_dir=tmp_path / "b",
                                       progress=False, images=images)
    np.testing.assert_array_equal(got.features, want.features)
    assert got.fingerprint == want.fingerprint


def test_a_corrupt_cache_file_is_recomputed(tmp_path):
    toy = CountingFeatures()
    os.makedirs(tmp_path, exist_ok=True)
    (tmp_path / "digits-heldout-toy.npz").write_bytes(b"not an npz")
    stats = metrics.reference_statistics(toy.extractor("toy-v1"), "digits", "heldout", count=20,
                                         cache_dir=tmp_path, progress=False)
    assert toy.calls > 0 and stats.features.shape == (20, 6)


def test_bad_counts_and_generated_statistics(tmp_path):
    toy = CountingFeatures()
    with pytest.raises(ValueError, match=r"count 1000 is out of range: .* holds 297 images"):
        metrics.reference_statistics(toy.extractor("t"), "digits", "heldout", count=1000, cache_dir=tmp_path)
    samples = np.random.default_rng(1).uniform(-1.1, 1.1, size=(30, 8, 8, 1)).astype(np.float32)
    with pytest.raises(ValueError, match="clip=True"):
        metrics.compute_statistics(toy.extractor("t"), samples, progress=False)
    stats = metrics.compute_statistics(toy.extractor("t"), samples, clip=True, progress=False)
    assert stats.fingerprint is None and stats.cov.shape == (6, 6)


def test_bundled_digits_classifier_separates_real_digits_from_noise(tmp_path):
    """End to end with the bundled feature network: held-out digits score close to the training
    split, uniform noise far from it, on FID, KID and Inception Score."""
    from ddss_tf import pretrained

    extractor = metrics.from_keras_classifier(pretrained.digits_classifier(), name="digits_classifier")
    ref = metrics.reference_statistics(extractor, "digits", "train", cache_dir=tmp_path, progress=False)
    held = metrics.compute_statistics(extractor, data.load("digits", "heldout"), progress=False)
    noise = metrics.compute_statistics(
        extractor, np.random.default_rng(0).uniform(-1, 1, size=(297, 8, 8, 1)), progress=False)
    fid_held = metrics.fid_from_statistics(held.mean, held.cov, ref.mean, ref.cov)
    fid_noise = metrics.fid_from_statistics(noise.mean, noise.cov, ref.mean, ref.cov)
    assert fid_held < 0.2 * fid_noise
    np.testing.assert_allclose(fid_held, metrics.fid(held.features, ref.features), rtol=1e-6)
    kid_held, se_held = metrics.kid(held.features, ref.features, block_size=100)
    kid_noise, se_noise = metrics.kid(noise.features, ref.features, block_size=100)
    assert abs(kid_held) < 3 * se_held and kid_noise > 5 * se_noise
    is_held, _ = metrics.inception_score(held.logits, splits=3)
    is_noise, _ = metrics.inception_score(noise.logits, splits=3)
    assert is_held > 5.0 and is_held > 2 * is_noise
