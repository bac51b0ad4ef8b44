"""Evaluating a class-conditional model: samples are drawn for balanced labels under the
guided model batch by batch, and scored class by class. References: samplers built directly
on the guided model for each batch's labels; per-class FID and accuracy recomputed in numpy."""

import numpy as np
import pytest
import scipy.linalg

from ddss_tf import data, denoisers, metrics, noise, pretrained, samplers, schedules
from ddss_tf.evaluation import draws, scoring
from ddss_tf import guidance as guidance_lib

import toy_networks


def _conditional_model():
    return denoisers.from_keras_model(toy_networks.conditional_eps_model(), schedules.linear_beta())


def test_samples_of_a_guided_model_follow_balanced_labels_batch_by_batch():
    cond = _conditional_model()
    g = guidance_lib.Guidance(cond, 2.0, np.arange(10), 10)
    layer = samplers.create("ddim", g.unbound(), num_steps=3, remat=False)
    got = draws.sample(layer, 10, (8, 8, 1), seed=7, batch_size=4, guidance=g)
    assert got.shape == (10, 8, 8, 1)
    np.testing.assert_array_equal(draws.labels(12, 10), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    for b, labels in enumerate(([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1])):
        direct = samplers.create("ddim", cond.guided(np.array(labels, np.int32), 2.0),
                                 num_steps=3, remat=False)
        x_T, z = noise.draw_batch(7, b, 3, [4, 8, 8, 1])
        want = direct(x_T, z).numpy()[:len(got[4 * b:4 * b + 4])]
        np.testing.assert_allclose(got[4 * b:4 * b + 4], want, rtol=1e-5, atol=1e-6)
    grid = draws.grid_images(layer, (8, 8, 1), 10, 3, seed=7, batch_size=4, guidance=g)
    np.testing.assert_allclose(grid, got[:3], rtol=1e-5, atol=1e-6)


def test_scores_of_labelled_samples_per_class_and_held_out_accuracy():
    ext, held_ext = pretrained.digits_features(), pretrained.digits_heldout_features()
    real, real_labels = data.load_labeled("digits", "train")
    ref = metrics.compute_statistics(ext, real, progress=False)
    held_ref = metrics.compute_statistics(held_ext, real, progress=False)
    scorer = scoring.Scorer(ext, ref, held_ext, held_ref, real_labels=real_labels)
    images, labels = data.load_labeled("digits", "heldout")  # stand-ins for generated samples
    got = scorer(images, labels)

    def fid(a, b):
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        return (np.sum((a.mean(0) - b.mean(0)) ** 2)
                + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))

    feats = metrics.extract(ext, images, progress=False).features.astype(np.float64)
    want = np.mean([fid(feats[labels == c], ref.features[real_labels == c].astype(np.float64))
                    for c in range(10)])
    assert got["class_fid"] == pytest.approx(want, rel=1e-4)
    logits = metrics.extract(held_ext, images, progress=False).logits
    assert got["heldout_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == labels))
    assert got["heldout_accuracy"] > 0.9 and np.isfinite(got["class_kid"])
    # Asking for other labels than the images show: accuracy collapses, per-class FID grows.
    wrong = scorer(images, (labels + 1) % 10)
    assert wrong["heldout_accuracy"] < 0.1 and wrong["class_fid"] > got["class_fid"] + 10
    with pytest.raises(ValueError, match="needs the reference's labels"):
        scoring.Scorer(ext, ref)(images, labels)
