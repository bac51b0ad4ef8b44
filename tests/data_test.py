"""The digits dataset: shapes, range, the fixed split."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ddss_tf import data


def test_digits_splits_shapes_range_and_partition():
    train, y_train = data.load_labeled("digits", "train")
    held, y_held = data.load_labeled("digits", "heldout")
    everything = data.load("digits", "all")
    assert train.shape == (1500, 8, 8, 1) and held.shape == (297, 8, 8, 1)
    assert everything.shape == (1797, 8, 8, 1)
    for x in (train, held, everything):
        assert x.dtype == np.float32 and x.min() >= -1.0 and x.max() <= 1.0
    # Values 0..16 map to x / 8 - 1.
    raw = load_digits().images
    np.testing.assert_array_equal(everything[..., 0], raw / 8.0 - 1.0)
    # train and heldout partition the data set.
    key = lambda x: {r.tobytes() for r in x.reshape(len(x), -1)}
    assert not key(train) & key(held)
    assert len(y_train) + len(y_held) == 1797
    assert set(np.unique(y_held)) == set(range(10))
    # The split is fixed: loading twice gives the same arrays.
    np.testing.assert_array_equal(data.load("digits", "heldout"), held)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown dataset 'no_such_dataset'; accepted: digits"):
        data.load("no_such_dataset")
    with pytest.raises(ValueError, match="accepted: train, heldout, all"):
        data.load("digits", "test")
