"""A guided search step (ddss_tf.guidance + search.trainer): its loss and gradient equal an
independent computation on the global batch (a sampler built directly on the guided model,
per-class losses class by class), on one device and on two mirrored replicas; labels follow
the data's frequencies; only the sampler's variables change. And `run_search` end to end on a
conditional Keras file: the class scores in every record, the export with its labels and
guidance scale, and ddss_sample on it, for a sampler searched across two guidance scales:
scored at each, its export serving every scale between them."""

import dataclasses
import glob
import json

import numpy as np
import pytest
import tensorflow as tf

import testing
import toy_networks
from ddss_tf import data, denoisers, export, noise, pretrained, sampling, schedules
from ddss_tf import guidance as guidance_lib
from ddss_tf.metrics import extract, mmd
from ddss_tf.search import SearchConfig, run_search
from ddss_tf.search import strategies
from ddss_tf.search import trainer as trainer_lib
from ddss_tf.search.objectives import kid

pytestmark = pytest.mark.usefixtures("isolated_cache")

W = 1.5


@pytest.fixture(scope="module")
def setup():
    cond = denoisers.from_keras_model(toy_networks.conditional_eps_model(), schedules.linear_beta())
    ext = pretrained.digits_features()
    images, labels = data.load_labeled("digits", "train")
    real = extract(ext, images, progress=False).features
    return cond, ext, real, labels


def _cfg(**kw):
    # The raw samples: _reference computes the loss without the clip (search_clip_test has it).
    return SearchConfig(**dict(dict(num_steps=3, batch_size=8, xla=False, train_steps=10,
                                    init="ddpm", learning_rate=1e-3, clip_samples=False), **kw))


def _reference(cfg, cond, layer, ext, real, real_labels, replicas):
    """(loss, grads) of the global batch, without Trainer or tf.distribute."""
    local = cfg.batch_size // replicas
    xs, zs, ls = [], [], []
    g = guidance_lib.Guidance(cond, W, real_labels, 10)
    for r in range(replicas):
        x_T, z, key = noise.step_noise(cfg.seed, 0, r, cfg.num_steps, [local, 8, 8, 1])
        xs.append(x_T), zs.append(z)
        ls.append(g.labels(tf.random.experimental.stateless_fold_in(key, 1), local))
    x_T, z, labels = tf.concat(xs, 0), tf.concat(zs, 1), tf.concat(ls, 0).numpy()
    direct = cfg.build_sampler(cond.guided(labels, W))
    direct(x_T, z)  # build
    for a, b in zip(direct.trainable_variables, layer.trainable_variables):
        a.assign(b)
    with tf.GradientTape() as tape:
        feats = ext(direct(x_T, z))
        classes = [c for c in np.unique(labels) if (labels == c).sum() >= 2]
        loss = tf.add_n([mmd.kid_loss(tf.boolean_mask(feats, labels == c),
                                      real[real_labels == c].mean(0, keepdims=True))
                         for c in classes]) / len(classes)
    return float(loss), tape.gradient(loss, direct.trainable_variables), labels


@pytest.mark.parametrize("xla", [False, True])
def test_a_guided_step_is_the_per_class_kid_of_the_guided_chain(setup, xla):
    cond, ext, real, real_labels = setup
    cfg = _cfg(xla=xla)  # with XLA the looped chain compiles its network call alone
    g = guidance_lib.Guidance(cond, W, real_labels, 10)
    layer = cfg.build_sampler(g.unbound())
    loss = kid.ClassKIDLoss(g, real, cfg.kernel)
    trainer = trainer_lib.Trainer(layer, ext, loss, tf.distribute.get_strategy(), cfg, [8, 8, 1])
    loss, _, grads = trainer._compute(trainer.step.read_value())
    want_loss, want_grads, _ = _reference(cfg, cond, layer, ext, real, real_labels, 1)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    # Float32 sums in another order (the reference sums the classes' losses itself; XLA fuses
    # and reorders more): a gradient's small entries are compared to its largest (an entry 30x
    # smaller than it moved by 1e-3 relative without XLA, 2e-3 with it).
    for a, b in zip(grads, want_grads):
        b = b.numpy()
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
    before = [v.numpy().copy() for v in layer.trainable_variables]
    net_before = [w.numpy().copy() for w in cond.network.weights]
    trainer.train_step()
    assert all(not np.array_equal(a, v.numpy()) for a, v in zip(before, layer.trainable_variables))
    for a, w in zip(net_before, cond.network.weights):
        np.testing.assert_array_equal(a, w.numpy())
    with pytest.raises(ValueError, match=r"runs with its labels bound: layer.using_denoiser"):
        layer(tf.zeros([2, 8, 8, 1]), tf.zeros([3, 2, 8, 8, 1]))


def test_two_mirrored_replicas_equal_the_global_batch(setup):
    cond, ext, real, real_labels = setup
    cfg = _cfg(batch_size=8)
    # The process's one MirroredStrategy (strategies.make): a second one issuing collectives
    # can be handed clashing collective instance keys, failing a later test's.
    strategy = strategies.make("mirrored")
    assert strategy.num_replicas_in_sync == 2  # tests/conftest.py's two logical CPUs
    g = guidance_lib.Guidance(cond, W, real_labels, 10)
    with strategy.scope():
        layer = cfg.build_sampler(g.unbound())
        trainer = trainer_lib.Trainer(layer, ext, kid.ClassKIDLoss(g, real, cfg.kernel, 2),
                                      strategy, cfg, [8, 8, 1])
    loss, norm, _ = trainer._compute(trainer.step.read_value())
    want_loss, want_grads, labels = _reference(cfg, cond, layer, ext, real, real_labels, 2)
    first = strategy.experimental_local_results
    assert float(first(loss)[0]) == pytest.approx(want_loss, rel=1e-5)
    assert float(first(norm)[0]) == pytest.approx(float(tf.linalg.global_norm(want_grads)),
                                                  rel=1e-4)
    assert len(set(labels.tolist())) > 1


def test_labels_follow_the_data_and_bad_guidance_is_refused(setup):
    cond, _, _, real_labels = setup
    g = guidance_lib.Guidance(cond, 0.0, real_labels, 10)
    drawn = g.labels(tf.constant([1, 2], tf.int64), 30000).numpy()
    want = np.bincount(real_labels, minlength=10) / len(real_labels)
    np.testing.assert_allclose(np.bincount(drawn, minlength=10) / 30000, want, atol=0.01)
    few = guidance_lib.Guidance(cond, 0.0, np.array([2, 2, 5]), 10)
    assert set(few.labels(tf.constant([0, 1], tf.int64), 500).numpy()) == {2, 5}
    with pytest.raises(ValueError, match="guidance_scale must be a number >= 0, got -1"):
        guidance_lib.Guidance(cond, -1, real_labels, 10)
    with pytest.raises(ValueError, match=r"reference labels must lie in 0..4, got 0..9"):
        guidance_lib.Guidance(cond, 1, real_labels, 5)
    with pytest.raises(ValueError, match="guidance needs a conditional model"):
        guidance_lib.Guidance(cond.guided([1], 1.0), 1, real_labels, 10)


def test_a_guided_search_on_a_conditional_keras_file_end_to_end(setup, tmp_path):
    """One run across the scales [0, W] (a search at one scale is the same run without the
    scale draw and across_scales, and its step is tested above)."""
    cond = setup[0]
    path = str(tmp_path / "cond.keras")
    cond.network.save(path)
    cfg = SearchConfig(model=path, schedule="linear_beta", guidance_scale=[0.0, W], num_steps=2,
                       batch_size=8, train_steps=2, xla=False, checkpoint_every=1, eval_every=1,
                       eval_samples=40, validation_samples=40, final_samples=40, reference_steps=10)
    assert cfg.run_name() == "ggdm_pred_time_k2_w0-1.5"
    assert SearchConfig(guidance_scale=W, num_steps=2).run_name() == "ggdm_pred_time_k2_w1.5"
    results = run_search(cfg, str(tmp_path / "run"), log=lambda *a: None)
    assert results["selected"] is not None
    # select=best's validation FID: the mean over the anchors and the midpoint between them
    # (at the evaluated steps; the start's is validated before TensorBoard opens).
    events = [e for f in glob.glob(str(tmp_path / "run" / "tensorboard" / "*"))
              for e in tf.compat.v1.train.summary_iterator(f)]
    fids = {(e.step, v.tag): float(tf.make_ndarray(v.tensor)) for e in events
            for v in e.summary.value if v.tag.startswith("validation/")}
    for step in (1, 2):
        per_scale = [fids[step, f"validation/fid_w{w}"] for w in ("0", "0.75", "1.5")]
        assert fids[step, "validation/fid"] == pytest.approx(np.mean(per_scale), rel=1e-5)
    assert results["search_network_evaluations"] == 2 * 8 * 2 * 2  # guided: two per sample
    for r in results["records"]:
        assert {"class_fid", "class_kid", "heldout_accuracy"} <= set(r), r["sampler"]
        assert 0 <= r["heldout_accuracy"] <= 1 and np.isfinite(r["class_fid"])
    text = (tmp_path / "run" / "results.md").read_text()
    assert "class FID | held-out accuracy" in text
    assert (f"--model={path} --schedule=linear_beta --seed=2000003 --batch_size=40 "
            f"--num_samples=40 --labels=0,1,2,3,4,5,6,7,8,9 --guidance_scale=1.5`") in text
    # Every anchor scored, the baselines guided alike; the main records are the largest's.
    across = results["across_scales"]
    assert [a["guidance_scale"] for a in across] == [0.0, W] and "### w = 0" in text
    learned = [[r for r in a["records"] if r["role"] == "learned"] for a in across]
    assert all(len(rs) == 1 and len(a["records"]) > 1 for rs, a in zip(learned, across))
    main = [r for r in results["records"] if r["role"] == "learned"][0]
    assert main["fid"] == pytest.approx(learned[1][0]["fid"])
    _check_the_export(results["export"], cond, tmp_path / "run" / "coefficients.json")
    _check_ddss_sample(results["export"], path, tmp_path)
    with pytest.raises(ValueError, match="give a classifier-free guidance scale"):
        run_search(dataclasses.replace(cfg, guidance_scale=None), str(tmp_path / "none"),
                   log=lambda *a: None)
    with pytest.raises(ValueError, match="guidance_scale applies to conditional models; model "
                                         "'digits' is unconditional"):
        run_search(SearchConfig(guidance_scale=1.0), str(tmp_path / "digits"),
                   log=lambda *a: None)
    with pytest.raises(ValueError, match="guidance_scale must be a number >= 0"):
        SearchConfig(guidance_scale=-2.0).validate()


def _check_the_export(version_dir, cond, coefficients):
    """The export takes labels and a scale in the range searched: its samples equal the learned
    sampler rebuilt from coefficients.json on the guided model, at the anchors and between
    them; other labels or scales are refused, in Python and by the signature itself; TF
    Serving's TF1 loader runs it."""
    doc = json.loads(open(coefficients).read())
    assert doc["guidance"] == {"num_classes": 10, "null_label": 10, "scale_range": [0.0, W]}
    sampler = export.load_sampler(version_dir)
    labels = np.array([3, 1, 4, 1, 5], np.int32)
    x_T, z = noise.draw(11, 2, [5, 8, 8, 1])
    for w in (0.0, 0.6, W):
        got, _ = sampler.from_noise(x_T.numpy(), z.numpy(), labels=labels, guidance_scale=w)
        direct = export.load_coefficients(str(coefficients), cond.guided(labels, tf.constant(w)),
                                          remat=False)
        want = np.clip(direct(x_T, z).numpy(), -1, 1)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert sampler.sample(5, seed=11, labels=labels, guidance_scale=W).shape == (5, 8, 8, 1)
    with pytest.raises(ValueError, match=r"guidance_scale must be in \[0, 1.5\]"):
        sampler.sample(5, seed=11, labels=labels, guidance_scale=3.0)
    with pytest.raises(ValueError, match=r"labels must be 5 integers in \[0, 9\]"):
        sampler.sample(5, seed=11, labels=[0, 1, 2, 3, 10], guidance_scale=W)
    fn = sampler._signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="the range searched"):
        fn(num_samples=tf.constant(5), seed=tf.constant([0, 11]), labels=tf.constant(labels),
           guidance_scale=tf.constant(2.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="one label per sample"):
        fn(num_samples=tf.constant(4), seed=tf.constant([0, 11]), labels=tf.constant(labels),
           guidance_scale=tf.constant(W))
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], version_dir)
        sig = meta.signature_def["from_noise"]
        assert set(sig.inputs) == {"x_T", "noise", "labels", "guidance_scale"}
        out = sess.run(sig.outputs["images"].name, {
            sig.inputs["x_T"].name: x_T.numpy(), sig.inputs["noise"].name: z.numpy(),
            sig.inputs["labels"].name: labels, sig.inputs["guidance_scale"].name: W})
    np.testing.assert_allclose(out, got, rtol=1e-5, atol=1e-6)


def _check_ddss_sample(version_dir, model, tmp_path):
    """ddss_sample --labels --guidance_scale: the export, its coefficients.json rebuilt on the
    model and the binary give the same images; a missing or stray condition is one line."""
    labels, kw = [7, 2], dict(seed=5, batch_size=3)
    want, _ = sampling.draw(sampling.from_export(version_dir), 5, labels=labels,
                            guidance_scale=W, **kw)
    coefficients = str(tmp_path / "run" / "coefficients.json")
    rebuilt = sampling.from_coefficients(coefficients, model=model, schedule="linear_beta")
    got, _ = sampling.draw(rebuilt, 5, labels=labels, guidance_scale=W, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="for a conditional model: give labels and guidance"):
        sampling.draw(rebuilt, 2)
    with pytest.raises(ValueError, match=r"guidance_scale must be in \[0, 1.5\] \(the range"):
        sampling.draw(rebuilt, 2, labels=[1], guidance_scale=2.5)
    with pytest.raises(ValueError, match="for an unconditional model: it takes no labels"):
        sampling.draw(sampling.from_family("ddim", num_steps=2), 2, labels=[1],
                      guidance_scale=1.0)
    out = str(tmp_path / "guided.npz")
    proc = testing.run_binary("ddss_sample", f"--sampler={version_dir}", "--labels=7,2",
                              f"--guidance_scale={W}", "--num_samples=5", "--seed=5",
                              "--batch_size=3", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(out)["images"], want, rtol=0, atol=1e-6)
    proc = testing.run_binary("ddss_sample", f"--sampler={version_dir}", f"--out={out}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: this sampler is for a conditional model: give labels" in proc.stderr
