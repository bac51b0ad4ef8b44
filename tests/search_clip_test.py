"""clip_samples: the search's loss scores the chain's samples, and the teacher's, clipped to
the feature network's data range, as the evaluation scores them (at K = 3 on the bundled
model 39% of the start's pixels lie outside [-1, 1], and a loss of the raw samples moves away
from what FID on the clipped ones rewards: docs/ddss_search.md, "K = 3, seed 0")."""

import json
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from search_helpers import QUIET, tiny_config
from ddss_tf.metrics import mmd
from ddss_tf.search import SearchConfig, objectives
from ddss_tf.search import workdir as workdir_lib
from ddss_tf.search.run import Run

pytestmark = pytest.mark.usefixtures("isolated_cache")


def _kid(run, images, real):
    return mmd.kid_loss(run.evaluator.extractor(images), real, run.cfg.kernel)


@pytest.mark.parametrize("clip", [True, False])
def test_the_loss_and_its_gradient_are_those_of_the_clipped_samples(clip):
    run = Run(tiny_config(clip_samples=clip, init="ddpm"), tempfile.gettempdir(), QUIET)
    x_T, z, inputs = run.trainer.step_inputs(0)
    got, _, grads = run.trainer.loss_and_gradients(x_T, z, inputs)
    low, high = run.evaluator.extractor.data_range
    raw = run.layer(x_T, z).numpy()
    assert (raw < low).any() and (raw > high).any()  # the toy chain overshoots both ends
    (real,) = inputs
    clipped = float(_kid(run, np.clip(raw, low, high), real))
    unclipped = float(_kid(run, raw, real))
    assert float(got) == pytest.approx(clipped if clip else unclipped, rel=1e-5)
    assert float(got) != pytest.approx(unclipped if clip else clipped, rel=1e-3)
    # The gradient is the clipped loss's: nothing flows through a clipped pixel.
    with tf.GradientTape() as tape:
        images = run.layer(x_T, z)
        if clip:
            images = tf.clip_by_value(images, low, high)
        loss = _kid(run, images, real)
    want = tape.gradient(loss, run.trainer.variables)
    for g, w in zip(grads, want):
        w = np.zeros_like(g) if w is None else w.numpy()
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6 * max(1.0, np.abs(w).max()))


def test_the_teacher_pairs_are_clipped_with_the_samples():
    cfg = tiny_config(clip_samples=True, objective="kid_teacher", init="ddpm", ld3_pairs=8,
                      teacher_steps=4)
    run = Run(cfg, tempfile.gettempdir(), QUIET)
    pairs = run.trainer.loss.pairs
    low, high = run.evaluator.extractor.data_range
    assert pairs.x0.min() >= low and pairs.x0.max() <= high
    np.testing.assert_allclose(pairs.features, run.evaluator.extractor(pairs.x0).numpy(),
                               rtol=1e-5, atol=1e-6)
    raw = tiny_config(objective="kid_teacher", init="ddpm", ld3_pairs=8, teacher_steps=4)
    unclipped = Run(raw, tempfile.gettempdir(), QUIET).trainer.loss.pairs.x0
    assert np.abs(unclipped).max() > high
    np.testing.assert_allclose(pairs.x0, np.clip(unclipped, low, high), rtol=0, atol=1e-6)


def test_the_recipe_clips_at_few_steps_and_a_work_directory_from_before_it_did_not():
    clipped = objectives.base.CLIPPED_STEPS
    for k in (clipped, clipped + 1, 10):
        cfg = SearchConfig(num_steps=k)
        assert cfg.clip_samples is (k <= clipped) and "clip_samples" in cfg.resolved()
    assert SearchConfig(num_steps=clipped, clip_samples=False).clip_samples is False
    # The paper's recipe (KID from DDIM, no start screen) and LD3's score the raw samples.
    assert objectives.get("ld3").recipe(clipped)["clip_samples"] is False
    # A work directory from before clip_samples scored the raw samples: it reads so, and is
    # not resumed by a search that clips.
    old = json.loads(SearchConfig(num_steps=clipped, clip_samples=False).to_json())
    del old["clip_samples"]
    raw = SearchConfig(num_steps=clipped, clip_samples=False)
    assert workdir_lib.differing_settings(old, raw) == []
    assert workdir_lib.differing_settings(old, SearchConfig(num_steps=clipped)) == [
        "clip_samples"]
