"""ddss_train_model's library: L_simple goes down, interrupt + resume equals an uninterrupted run."""

import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

import testing
from ddss_tf import data, interrupt, models, pretrained, progress, schedules
from ddss_tf.training import ddpm

_TINY = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
             norm_groups=4)


def _cfg(**kw):
    base = dict(net=dict(_TINY), batch_size=16, train_steps=6, warmup_steps=2, log_every=1,
                checkpoint_every=100, xla=False, seed=3)
    base.update(kw)
    return ddpm.TrainConfig(**base)


def _weights(model_dir):
    model, _ = pretrained.load_ddpm(model_dir)
    return [w.numpy() for w in model.weights]


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
    full = ddpm.train(_cfg(), str(tmp_path / "full"))
    original_update = progress.Progress.update
    sent = []

    def interrupt_at_3(self, step, force=False, **metrics):
        original_update(self, step, force, **metrics)
        if step == 3 and not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGINT)  # the real signal path: handler, checkpoint, exit

    monkeypatch.setattr(progress.Progress, "update", interrupt_at_3)
    workdir = str(tmp_path / "resumed")
    with pytest.raises(interrupt.Interrupted, match="at step 3"):  # stopped cleanly
        ddpm.train(_cfg(), workdir)
    assert not os.path.exists(os.path.join(workdir, "model"))
    monkeypatch.setattr(progress.Progress, "update", original_update)
    resumed = ddpm.train(_cfg(), workdir)
    for a, b in zip(_weights(full), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    meta = json.load(open(os.path.join(resumed, "config.json")))
    assert meta["kind"] == "ddpm" and np.isfinite(meta["heldout_loss"])


def test_loss_decreases_and_heldout_loss_is_reproducible(tmp_path):
    out = ddpm.train(_cfg(train_steps=60, warmup_steps=5, learning_rate=3e-3, xla=True, ema_decay=0.8),
                     str(tmp_path / "run"))
    meta = json.load(open(os.path.join(out, "config.json")))
    model, sched = pretrained.load_ddpm(out)
    from ddss_tf import data
    again = ddpm.heldout_loss(model, sched, data.load("digits", "heldout"))
    assert again == pytest.approx(meta["heldout_loss"], rel=1e-5)
    # An untrained eps-model (zero output) has L_simple = 1; training must beat it clearly.
    assert meta["heldout_loss"] < 0.5


def test_resume_with_different_settings_is_refused(tmp_path):
    ddpm.train(_cfg(train_steps=1, warmup_steps=0), str(tmp_path / "w"))
    with pytest.raises(ValueError, match="different batch_size"):
        ddpm.train(_cfg(train_steps=1, warmup_steps=0, batch_size=8), str(tmp_path / "w"))


@pytest.mark.parametrize("kw,match", [
    (dict(batch_size=0), "batch_size"),
    (dict(warmup_steps=10), "warmup_steps"),
    (dict(dataset="cifar"), "accepted: digits"),
    (dict(schedule={"kind": "bogus"}), "accepted: cosine, linear_beta"),
])
def test_bad_config(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        ddpm.train(_cfg(**kw), str(tmp_path / "x"))


def test_label_dropout_replaces_labels_by_the_null_label_at_its_rate():
    import tensorflow as tf
    labels = tf.constant(np.random.default_rng(0).integers(0, 10, 20000), tf.int32)
    out = ddpm.batch_labels(tf.constant([4, 2], tf.int64), labels, 0.1, 10).numpy()
    dropped = out == 10
    # Binomial(20000, 0.1): standard deviation 42 around 2000.
    assert abs(dropped.sum() - 2000) < 5 * 42
    np.testing.assert_array_equal(out[~dropped], labels.numpy()[~dropped])
    assert (ddpm.batch_labels(tf.constant([4, 2], tf.int64), labels, 0.0, 10).numpy()
            == labels.numpy()).all()


def test_class_conditional_training_exports_a_model_conditioned_on_labels(tmp_path):
    from ddss_tf import data
    out = ddpm.train(_cfg(net=dict(_TINY, num_classes=10), train_steps=4, ema_decay=0.0,
                          learning_rate=1e-2),
                     str(tmp_path / "cond"))
    model, sched = pretrained.load_ddpm(out)
    assert [i.name for i in model.inputs] == ["x_t", "t", "c"]
    meta = json.load(open(os.path.join(out, "config.json")))
    assert meta["net"]["num_classes"] == 10 and meta["train_config"]["label_dropout"] == 0.1
    images, labels = data.load_labeled("digits", "heldout")
    again = ddpm.heldout_loss(model, sched, images, labels=labels)
    assert again == pytest.approx(meta["heldout_loss"], rel=1e-5)
    # The recorded loss is the conditional one: other labels give another loss.
    assert ddpm.heldout_loss(model, sched, images, labels=(labels + 1) % 10) != pytest.approx(
        again, rel=1e-7)
    with pytest.raises(ValueError, match=r"labels 0..9, outside 0..4 \(num_classes 5\)"):
        ddpm.train(_cfg(net=dict(_TINY, num_classes=5)), str(tmp_path / "few"))


def test_a_rectified_flow_model_learns_the_velocity_and_loads_as_a_flow_model(tmp_path):
    """--schedule=rectified_flow: the network regresses eps - x0 from the flow state at
    time_scale * s; the directory loads as a flow model (its own prediction) whose held-out
    loss is the velocity MSE, reproducible, below the zero network's E|eps - x0|^2."""
    sched = schedules.rectified_flow(1000, 3.0, 1000.0)
    out = ddpm.train(_cfg(schedule=sched.get_config(), train_steps=40, warmup_steps=5,
                          learning_rate=3e-3, xla=True, ema_decay=0.8),
                     str(tmp_path / "flow"))
    meta = json.load(open(os.path.join(out, "config.json")))
    assert meta["prediction"] == "flow" and meta["schedule"] == sched.get_config()
    den, net = models.load_denoiser(out)
    assert den.prediction == "flow" and den.schedule.get_config() == sched.get_config()
    assert models.own_prediction(out) == "flow"
    images = data.load("digits", "heldout")
    assert ddpm.heldout_loss(net, den.schedule, images) == pytest.approx(meta["heldout_loss"],
                                                                         rel=1e-5)
    zero = 1.0 + float(np.mean(images ** 2))       # E|eps - x0|^2 of a network returning 0
    assert meta["heldout_loss"] < 0.8 * zero
    # What the network is trained on: the flow state (1 - s) x0 + s eps at 1000 s, and eps - x0.
    x0, eps = images[:3], np.random.default_rng(0).standard_normal(images[:3].shape)
    t = np.array([0.0, 400.5, 999.0], np.float32)
    (x_in, t_in), target = ddpm.training_pair(sched, *(tf.constant(v, tf.float32)
                                                       for v in (x0, eps, t)))
    s = sched.flow_sigma(t)[:, None, None, None]
    np.testing.assert_allclose(x_in, (1 - s) * x0 + s * eps, atol=1e-5)
    np.testing.assert_allclose(t_in, 1000.0 * s.ravel(), rtol=1e-6)
    np.testing.assert_allclose(target, eps - x0, atol=1e-6)


def test_ddss_train_model_takes_shift_and_time_scale_with_rectified_flow_only(tmp_path):
    proc = testing.run_binary("ddss_train_model", f"--workdir={tmp_path}/w", "--shift=3")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert ("error: --shift and --time_scale are for --schedule=rectified_flow only (got --shift "
            "with --schedule=linear_beta)") in proc.stderr
