"""The bundled models load as docs/design.md ("Public interfaces") spells it and reproduce their recorded numbers."""

import os
import shutil

import numpy as np
import pytest

from ddss_tf import data, models, pretrained, schedules
from ddss_tf.training import classifier as classifier_training
from ddss_tf.training import ddpm


@pytest.mark.parametrize("load,name", [
    (pretrained.digits_classifier, "digits_classifier"),
    (pretrained.digits_heldout_classifier, "digits_classifier_heldout"),
])
def test_classifiers_reproduce_recorded_heldout_accuracy(load, name):
    model = load()
    meta = pretrained.load_config(pretrained.asset_dir(name))
    x, y = data.load_labeled("digits", "heldout")
    acc, loss = classifier_training.evaluate(model, x, y)
    assert acc == pytest.approx(meta["heldout_accuracy"], abs=1e-9)
    assert loss == pytest.approx(meta["heldout_loss"], rel=1e-4)
    assert model.output_shape == (None, 10)


def test_default_classifier_is_accurate_and_features_are_penultimate():
    x, y = data.load_labeled("digits", "heldout")
    acc, _ = classifier_training.evaluate(pretrained.digits_classifier(), x, y)
    assert acc >= 0.97
    feats = np.asarray(pretrained.digits_features()(x[:5]))
    assert feats.shape == (5, 128) and np.all(np.isfinite(feats))
    assert np.asarray(pretrained.digits_heldout_features()(x[:5])).shape == (5, 64)


def test_digits_ddpm_loads_and_reproduces_recorded_heldout_loss():
    model, sched = pretrained.digits_ddpm()
    assert isinstance(sched, schedules.Schedule) and sched.num_timesteps == 1000
    assert model.trainable is False
    meta = pretrained.load_config(pretrained.asset_dir("digits_ddpm"))
    loss = ddpm.heldout_loss(model, sched, data.load("digits", "heldout"),
                             seed=meta["heldout_loss_seed"], repeats=meta["heldout_loss_repeats"])
    assert loss == pytest.approx(meta["heldout_loss"], rel=1e-4)
    assert loss < 0.2  # far below the 1.0 of a model that predicts nothing


def test_digits_cond_ddpm_loads_conditional_and_reproduces_recorded_heldout_loss():
    """The bundled class-conditional model (--model=digits_cond): labels 0..9, null label 10;
    its held-out loss with the true labels as recorded, and below the one without them (the
    null label: the labels carry information about the images)."""
    model, sched = pretrained.digits_cond_ddpm()
    meta = pretrained.load_config(pretrained.asset_dir("digits_cond_ddpm"))
    images, labels = data.load_labeled("digits", "heldout")
    kw = dict(seed=meta["heldout_loss_seed"], repeats=meta["heldout_loss_repeats"])
    loss = ddpm.heldout_loss(model, sched, images, labels=labels, **kw)
    assert loss == pytest.approx(meta["heldout_loss"], rel=1e-4)
    unconditional = ddpm.heldout_loss(model, sched, images, labels=np.full_like(labels, 10), **kw)
    assert loss < unconditional < 0.2
    den, _ = models.load_denoiser("digits_cond")
    assert models.describe(den).startswith("conditional on labels 0..9")


def test_digits_flow_loads_as_a_flow_model_and_reproduces_recorded_heldout_loss():
    """The bundled rectified flow (--model=digits_flow): its own schedule and prediction, the
    held-out velocity MSE as recorded and far below a zero network's E|eps - x0|^2."""
    model, sched = pretrained.digits_flow()
    assert schedules.is_flow(sched) and sched.get_config() == {
        "kind": "rectified_flow", "num_timesteps": 1000, "shift": 1.0, "time_scale": 1000.0}
    meta = pretrained.load_config(pretrained.asset_dir("digits_flow"))
    images = data.load("digits", "heldout")
    loss = ddpm.heldout_loss(model, sched, images, seed=meta["heldout_loss_seed"],
                             repeats=meta["heldout_loss_repeats"])
    assert loss == pytest.approx(meta["heldout_loss"], rel=1e-4)
    assert loss < 0.5 * (1.0 + float(np.mean(images ** 2)))
    den, _ = models.load_denoiser("digits_flow")
    assert den.prediction == "flow" and models.own_prediction("digits_flow") == "flow"


def test_missing_and_corrupt_files_give_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.weights.h5 in"):
        pretrained.load_classifier(str(tmp_path))
    bad = tmp_path / "bad"
    shutil.copytree(pretrained.asset_dir("digits_classifier"), bad)
    with open(bad / "model.weights.h5", "wb") as f:
        f.write(b"not an h5 file")
    with pytest.raises(ValueError, match="corrupt"):
        pretrained.load_classifier(str(bad))
    with open(bad / "config.json", "w") as f:
        f.write("{")
    with pytest.raises(ValueError, match="corrupt"):
        pretrained.load_classifier(str(bad))
    with pytest.raises(ValueError, match="does not hold a diffusion model"):
        pretrained.load_ddpm(pretrained.asset_dir("digits_classifier"))
    assert os.path.isdir(pretrained.asset_dir("digits_classifier"))
