"""Bring your own data: image folders, .npz files and (mocked, offline) tensorflow-datasets,
fitted to a model's image shape, through reference statistics and the search's Scorer.

The expected images are computed here in numpy from the raw uint8 pixels: the centre crop
by slicing, the area resize with an integer factor as a block mean, x / 127.5 - 1."""

import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import data, data_sources, metrics
from ddss_tf import evaluation


def _raw(n, height=16, width=24, channels=3, seed=0):
    """uint8 images in 10..240 (so a small shift stays inside the data range after scaling)."""
    return np.random.default_rng(seed).integers(10, 241, size=(n, height, width, channels),
                                                dtype=np.uint8)


def _expected(raw, factor=2):
    """Centre crop of [N, 16, 24, C] to 16x16, then a factor x factor block mean, in [-1, 1]."""
    n, h, w, c = raw.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = raw[:, top:top + side, left:left + side].astype(np.float64)
    blocks = crop.reshape(n, side // factor, factor, side // factor, factor, c).mean((2, 4))
    return blocks / 127.5 - 1.0


def _write_pngs(folder, raw, names):
    os.makedirs(folder, exist_ok=True)
    for image, name in zip(raw, names):
        tf.io.write_file(os.path.join(folder, name), tf.io.encode_png(image))


def test_fit_crops_the_centre_and_averages_blocks():
    raw = _raw(5)
    got = data_sources.fit(data_sources.from_uint8(raw), (8, 8, 3))
    np.testing.assert_allclose(got, _expected(raw), rtol=0, atol=1e-6)
    # A tall image loses rows top and bottom; RGB -> grey is the BT.601 luma.
    tall = np.transpose(raw, (0, 2, 1, 3))  # 24 x 16: the transpose of the wide case
    grey = data_sources.fit(data_sources.from_uint8(tall), (8, 8, 1))
    luma = _expected(raw).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(grey[..., 0], luma @ np.array([0.299, 0.587, 0.114]), atol=1e-5)
    # Grey -> RGB repeats the channel; enlarging a constant image keeps it constant.
    rgb = data_sources.fit(np.full([2, 4, 4, 1], 0.25, np.float32), (8, 8, 3))
    np.testing.assert_allclose(rgb, 0.25, atol=1e-6)
    with pytest.raises(ValueError, match="cannot turn images with 3 channels into 2"):
        data_sources.fit(data_sources.from_uint8(raw), (8, 8, 2))


def _pixels_pipeline(dataset, split, image_shape, want, cache_dir):
    """reference_statistics and Scorer on `dataset` with pixel features, against `want`."""
    pixels = evaluation.load_extractor("pixels")
    ref = metrics.reference_statistics(pixels, dataset, split, image_shape=image_shape,
                                       cache_dir=cache_dir, progress=False)
    flat = want.reshape(len(want), -1)
    np.testing.assert_allclose(ref.features, flat, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ref.mean, flat.mean(0), rtol=0, atol=1e-5)
    assert "data" in ref.fingerprint  # the content is not fixed by the package
    # A shift by c moves the mean by c in all d pixels and keeps the covariance: FID = d c^2.
    scores = evaluation.Scorer(pixels, ref)(want.astype(np.float32) + 0.01)
    np.testing.assert_allclose(scores["fid"], flat.shape[1] * 0.01 ** 2, rtol=1e-3)
    assert evaluation.Scorer(pixels, ref)(want.astype(np.float32))["fid"] < 1e-6
    # The paired selection's scoring: the same FID, and the features it was computed from.
    fid, features = evaluation.Scorer(pixels, ref).fid(want.astype(np.float32) + 0.01)
    np.testing.assert_allclose(fid, flat.shape[1] * 0.01 ** 2, rtol=1e-3)
    np.testing.assert_allclose(features, flat + 0.01, rtol=0, atol=1e-5)
    return ref


def test_an_image_folder_with_split_subfolders(tmp_path):
    raw = _raw(7)
    # Class subfolders below the split, read in sorted path order.
    _write_pngs(tmp_path / "imgs" / "train" / "b", raw[:3], ["0.png", "1.png", "2.png"])
    _write_pngs(tmp_path / "imgs" / "train" / "a", raw[3:5], ["x.PNG", "y.png"])
    _write_pngs(tmp_path / "imgs" / "test", raw[5:], ["0.png", "1.png"])
    (tmp_path / "imgs" / "train" / "notes.txt").write_text("not an image")
    folder = str(tmp_path / "imgs")
    order = [3, 4, 0, 1, 2]
    images, labels = data.load_labeled(folder, "train", image_shape=(8, 8, 3))
    np.testing.assert_allclose(images, _expected(raw[order]), rtol=0, atol=1e-6)
    assert labels is None and images.dtype == np.float32
    np.testing.assert_allclose(data.load(folder, "test", (8, 8, 3)), _expected(raw[5:]), atol=1e-6)
    assert len(data.load(folder, "all", (8, 8, 3))) == 7  # no subfolder "all": every image
    np.testing.assert_allclose(data.load(folder, "test"), raw[5:] / 127.5 - 1, atol=1e-7)  # stored

    cache = tmp_path / "cache"
    ref = _pixels_pipeline(folder, "train", (8, 8, 3), _expected(raw[order]), str(cache))
    entries = list(cache.iterdir())  # one file right in the cache dir: the path made name-safe
    assert len(entries) == 1 and entries[0].is_file() and entries[0].suffix == ".npz", entries
    # A changed file under the same name is a different data set: recomputed, not read back.
    _write_pngs(tmp_path / "imgs" / "train" / "b", raw[5:6], ["0.png"])
    again = metrics.reference_statistics(evaluation.load_extractor("pixels"), folder, "train",
                                         image_shape=(8, 8, 3), cache_dir=str(cache),
                                         progress=False)
    assert again.fingerprint["data"] != ref.fingerprint["data"]
    np.testing.assert_allclose(again.features[2], _expected(raw[5:6]).reshape(-1), atol=1e-5)


@pytest.mark.parametrize("layout", ["images_key", "only_array", "float_grey"])
def test_an_npz_file(tmp_path, layout):
    raw = _raw(6)
    path = str(tmp_path / "data.npz")
    if layout == "images_key":
        np.savez(path, images=raw, labels=np.arange(6))
        want, shape = _expected(raw), (8, 8, 3)
    elif layout == "only_array":
        np.savez(path, raw[..., 0])  # [N, H, W]: one grey channel
        want, shape = _expected(raw[..., :1]), (8, 8, 1)
    else:  # floats are already in the data range (what ddss_sample writes)
        np.savez(path, x=raw[..., :1] / 127.5 - 1.0, y=np.zeros(6))
        want, shape = _expected(raw[..., :1]), (8, 8, 1)
    np.testing.assert_allclose(data.load(path, "train", shape), want, rtol=0, atol=1e-6)
    _pixels_pipeline(path, "train", shape, want, str(tmp_path / "cache"))


def test_a_tfds_name_offline_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        stored, labels = data.load_labeled("cifar10", "train")
        assert stored.shape == (6, 32, 32, 3) and labels.dtype == np.int64 and labels.shape == (6,)
        raw = np.round((stored.astype(np.float64) + 1) * 127.5).astype(np.uint8)
        np.testing.assert_allclose(raw / 127.5 - 1, stored, atol=1e-7)  # 0..255 scaled
        want = raw.reshape(6, 8, 4, 8, 4, 3).mean((2, 4)) / 127.5 - 1  # 32 -> 8: 4x4 blocks
        np.testing.assert_allclose(data.load("cifar10", "train", (8, 8, 3)), want, atol=1e-6)
        _pixels_pipeline("cifar10", "train", (8, 8, 3), want, str(tmp_path / "cache"))


def test_registered_data_keep_their_fingerprint_and_can_be_fitted(tmp_path):
    pixels = evaluation.load_extractor("pixels")
    native = metrics.reference_statistics(pixels, "digits", "heldout", image_shape=(8, 8, 1),
                                          cache_dir=str(tmp_path), progress=False)
    assert "data" not in native.fingerprint  # same entry as a call without image_shape
    big = data.load("digits", "heldout", image_shape=(16, 16, 3))
    assert big.shape == (297, 16, 16, 3)
    np.testing.assert_allclose(big[..., 0], big[..., 2])


def _expect_one_line(match, fn, *args):
    with pytest.raises(ValueError) as info:
        fn(*args)
    text = str(info.value)
    assert match in text and "\n" not in text, text


def test_bad_data_fail_with_one_line(tmp_path, monkeypatch):
    os.makedirs(tmp_path / "empty")
    np.savez(tmp_path / "two.npz", a=np.zeros([2, 4, 4]), b=np.zeros([2, 4, 4]))
    np.savez(tmp_path / "range.npz", images=np.full([2, 4, 4, 1], 2.0))
    np.savez(tmp_path / "flat.npz", images=np.zeros([2, 16]))
    _write_pngs(tmp_path / "mixed", [_raw(1)[0], _raw(1, 8, 8)[0]], ["a.png", "b.png"])
    (tmp_path / "mixed" / "c.png").write_bytes(b"not a png")
    cases = [
        ("unknown dataset './nowhere' (no such file or folder); accepted: digits, a folder of "
         "PNG/JPEG images, an .npz file", "./nowhere", "train"),
        ("holds no images", "empty", "train"),
        ("has no subfolder 'test'; splits: a subfolder name, or train / all", "empty", "test"),
        ("holds arrays ['a', 'b']; name the images images or x", "two.npz", "train"),
        ("must lie in the data range [-1, 1], found [2.0, 2.0]", "range.npz", "train"),
        ("has shape [2, 16]; expected images [N, H, W, C]", "flat.npz", "train"),
        ("an .npz data set has one split (train / all), got 'test'", "two.npz", "test"),
        ("cannot decode image", "mixed", "train"),
    ]
    for match, name, split in cases:
        path = name if name.startswith("./") else str(tmp_path / name)
        _expect_one_line(match, data.load, path, split, (8, 8, 3))
    os.remove(tmp_path / "mixed" / "c.png")
    _expect_one_line("differ in shape", data.load, str(tmp_path / "mixed"), "train")
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if tfds were missing
    _expect_one_line("tfds names need tensorflow-datasets: pip install \"ddss_tf[tfds]\"",
                     data.load, "cifar10")


def test_tfds_names_that_cannot_be_read_fail_with_one_line(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core import constants

    monkeypatch.setattr(constants, "DATA_DIR", str(tmp_path))  # an empty data_dir
    _expect_one_line("unknown dataset 'no_such_dataset'; accepted: digits", data.load,
                     "no_such_dataset")
    _expect_one_line(f"tensorflow-datasets has no prepared copy of 'mnist' in {tmp_path}/mnist/",
                     data.load, "mnist")
    with tfds.testing.mock_data(num_examples=2):
        _expect_one_line("tensorflow-datasets 'imdb_reviews' has no 'image' feature (it has label, "
                         "text)", data.load, "imdb_reviews")
