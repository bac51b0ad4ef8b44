"""The SavedModel export: same images in a fresh process, through the TF1 session loader
(what TF Serving and saved_model_cli use) and through `saved_model_cli run`."""

import os
import re
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import export_helpers as helpers
import testing
from ddss_tf import export, noise as noise_lib
from ddss_tf.search import strategies


def _tf1_run(version_dir, signature, feeds):
    """Run one signature with the TF1 session loader; returns {output name: array}."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], version_dir)
        sig = meta.signature_def[signature]
        feed = {sig.inputs[k].name: v for k, v in feeds.items()}
        names = sorted(sig.outputs)
        values = sess.run([sig.outputs[k].name for k in names], feed)
    return dict(zip(names, values))


def test_fresh_process_load_gives_the_in_memory_images():
    e = helpers.exported()
    x_T, noise = noise_lib.draw([0, helpers.SEED], helpers.K, [4, 8, 8, 1])
    inputs = os.path.join(e.work, "fresh_inputs.npz")
    outputs = os.path.join(e.work, "fresh_outputs.npz")
    np.savez(inputs, x_T=x_T.numpy(), noise=noise.numpy())
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({e.version_dir!r})
        d = np.load({inputs!r})
        a = m.signatures["from_noise"](x_T=tf.constant(d["x_T"]), noise=tf.constant(d["noise"]))
        b = m.signatures["serving_default"](num_samples=tf.constant(4),
                                            seed=tf.constant([0, {helpers.SEED}]))
        np.savez({outputs!r}, images=a["images"].numpy(), uint8=a["images_uint8"].numpy(),
                 served=b["images"].numpy())
    """)
    proc = testing.run([sys.executable, "-c", script], env=helpers.quiet_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = np.load(outputs)
    want_float, want_uint8 = helpers.reference_images(e.layer, [0, helpers.SEED], 4)
    np.testing.assert_allclose(out["images"], want_float, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["uint8"], want_uint8)
    np.testing.assert_array_equal(out["served"], want_uint8)
    assert out["served"].dtype == np.uint8 and out["served"].shape == (4, 8, 8, 1)


def test_tf1_session_loader_runs_every_signature():
    """Keras 3 variables tracked through Keras objects fail here (tensorflow issue 72963)."""
    e = helpers.exported()
    want_float, want_uint8 = helpers.reference_images(e.layer, [3, -5], 5)
    served = _tf1_run(e.version_dir, "serving_default",
                      {"num_samples": np.int32(5), "seed": np.array([3, -5], np.int32)})
    np.testing.assert_array_equal(served["images"], want_uint8)
    x_T, noise = noise_lib.draw([3, -5], helpers.K, [5, 8, 8, 1])
    out = _tf1_run(e.version_dir, "from_noise", {"x_T": x_T.numpy(), "noise": noise.numpy()})
    np.testing.assert_allclose(out["images"], want_float, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["images_uint8"], want_uint8)
    coefs = _tf1_run(e.version_dir, "coefficients", {})
    want = e.layer.coefficients()
    assert sorted(coefs) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(coefs[key], value.astype(np.float32), err_msg=key)


def _readme_request():
    """(signature name, inputs) of the REST request body in README.md's serving section."""
    import json

    with open(os.path.join(testing.ROOT, "README.md")) as f:
        text = f.read()
    block = text.split("<!-- serving-request -->", 1)[1]
    body = json.loads(re.search(r"-d '(\{.*?\})'", block, re.S).group(1))
    return body.get("signature_name", "serving_default"), body["inputs"]


def test_readme_request_matches_the_signature_in_saved_model_cli_show():
    e = helpers.exported()
    name, inputs = _readme_request()
    proc = helpers.saved_model_cli("show", "--dir", e.version_dir, "--tag_set", "serve",
                                   "--signature_def", name)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = re.findall(r"inputs\['(\w+)'\] tensor_info", proc.stdout)
    assert sorted(shown) == sorted(inputs)
    for key, value in inputs.items():
        m = re.search(rf"inputs\['{key}'\] tensor_info:\s+dtype: (\w+)\s+shape: (\S+)", proc.stdout)
        dtype, shape = m.group(1), m.group(2)
        assert dtype == "DT_INT32" and np.asarray(value).dtype.kind == "i", (key, dtype)
        dims = [] if shape == "()" else [int(d) for d in shape.strip("()").split(",") if d]
        assert len(np.shape(value)) == len(dims), (key, shape)
        assert all(d in (-1, v) for d, v in zip(dims, np.shape(value))), (key, shape)


def test_saved_model_cli_run_reproduces_the_readme_request():
    e = helpers.exported()
    name, inputs = _readme_request()
    outdir = os.path.join(e.work, "cli_out")
    exprs = ";".join(f"{k}={v!r}" for k, v in inputs.items())
    proc = helpers.saved_model_cli("run", "--dir", e.version_dir, "--tag_set", "serve",
                                   "--signature_def", name, "--input_exprs", exprs,
                                   "--outdir", outdir, "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(os.path.join(outdir, "images.npy"))
    _, want = helpers.reference_images(e.layer, inputs["seed"], inputs["num_samples"])
    np.testing.assert_array_equal(got, want)


def test_saved_model_cli_run_reports_the_num_samples_bound():
    e = helpers.exported()
    proc = helpers.saved_model_cli("run", "--dir", e.version_dir, "--tag_set", "serve",
                                   "--signature_def", "serving_default",
                                   "--input_exprs", "num_samples=100000;seed=[0,1]")
    assert proc.returncode != 0
    assert f"num_samples must be in [1, {helpers.MAX_NUM_SAMPLES}]" in proc.stderr


def test_the_rebuilt_json_layer_reproduces_the_export():
    e = helpers.exported()
    layer = export.load_coefficients(e.coefficients, e.den, remat=False)
    sampler = export.load_sampler(e.base)
    x_T, noise = noise_lib.draw([0, 11], helpers.K, [3, 8, 8, 1])
    images, uint8 = sampler.from_noise(x_T, noise)
    np.testing.assert_allclose(images, np.clip(layer(x_T, noise).numpy(), -1, 1), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(uint8, sampler.sample(3, [0, 11]))
    for key, value in sampler.coefficients().items():
        np.testing.assert_array_equal(value, layer.coefficients()[key].astype(np.float32))


# ---- bad input: one clear error ----

@pytest.fixture(scope="module")
def loaded():
    return tf.saved_model.load(helpers.exported().version_dir)


@pytest.mark.parametrize("num_samples", [0, -3, helpers.MAX_NUM_SAMPLES + 1, 2 ** 30])
def test_serving_default_bounds_num_samples(loaded, num_samples):
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=re.escape(f"num_samples must be in [1, {helpers.MAX_NUM_SAMPLES}]")):
        loaded.signatures["serving_default"](num_samples=tf.constant(num_samples),
                                             seed=tf.constant([0, 1]))


def test_signatures_reject_a_wrong_seed_shape_and_unknown_inputs(loaded):
    sig = loaded.signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="seed must be an int32 pair"):
        sig(num_samples=tf.constant(2), seed=tf.constant([0, 1, 2]))
    with pytest.raises(TypeError, match="steps"):
        sig(num_samples=tf.constant(2), seed=tf.constant([0, 1]), steps=tf.constant(3))
    x_T, noise = noise_lib.draw([0, 1], helpers.K, [2, 8, 8, 1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="noise must be"):
        loaded.signatures["from_noise"](x_T=x_T, noise=noise[:, :1])


def test_exported_sampler_checks_inputs_before_calling():
    sampler = export.load_sampler(helpers.exported().base)
    for bad, match in [(dict(num_samples=0), r"\[1, 8\]"), (dict(num_samples=9), r"\[1, 8\]"),
                       (dict(num_samples=2.5), "integer"), (dict(seed=[1, 2, 3]), "int32 pair"),
                       (dict(seed=-1), r"\[0, 2\*\*63\)")]:
        args = dict(dict(num_samples=2, seed=0), **bad)
        with pytest.raises(ValueError, match=match):
            sampler.sample(**args)
    x_T, noise = noise_lib.draw([0, 1], helpers.K, [2, 8, 8, 1])
    with pytest.raises(ValueError, match="noise must be"):
        sampler.from_noise(x_T, noise[:2])
    with pytest.raises(ValueError, match="x_T must be"):
        sampler.from_noise(np.zeros([2, 4, 4, 1]), noise)


# ---- versions and nothing half-written ----

def test_versions_count_up_and_ignore_other_entries():
    e = helpers.exported()
    base = os.path.join(e.work, "versions")
    os.makedirs(os.path.join(base, ".tmp-leftover"))
    os.makedirs(os.path.join(base, "notes"))
    first = export.export_sampler(e.layer, base)
    second = export.export_sampler(e.layer, base)
    assert (os.path.basename(first), os.path.basename(second)) == ("1", "2")
    assert export.load_sampler(base).path == second
    meta = os.path.join(second, "assets.extra", "coefficients.json")
    assert os.path.isfile(meta)
    umask = os.umask(0o022)
    os.umask(umask)
    # Readable by a server running as another user (mkdtemp / mkstemp alone give 0700 / 0600).
    assert os.stat(second).st_mode & 0o777 == 0o777 & ~umask
    assert os.stat(meta).st_mode & 0o777 == 0o666 & ~umask


def test_a_layer_built_under_mirrored_strategy_exports():
    """ddss_search builds its layer in strategy.scope(): MirroredVariables must not leak in."""
    e = helpers.exported()
    strategy = strategies.make("mirrored")  # one per process (see strategies._mirrored)
    with strategy.scope():
        layer = helpers.learned_layer(e.den, "rddim", time=True)
    version_dir = export.export_sampler(layer, os.path.join(e.work, "mirrored"))
    _, want = helpers.reference_images(layer, [0, 2], 3)
    served = _tf1_run(version_dir, "serving_default",
                      {"num_samples": np.int32(3), "seed": np.array([0, 2], np.int32)})
    np.testing.assert_array_equal(served["images"], want)


def test_a_failed_export_leaves_nothing(monkeypatch):
    e = helpers.exported()
    base = os.path.join(e.work, "failed")
    from ddss_tf.export import saved_model

    def broken_save(module, path, signatures):
        open(os.path.join(path, "saved_model.pb"), "w").write("partial")
        raise OSError("disk full")

    monkeypatch.setattr(saved_model.tf.saved_model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export.export_sampler(e.layer, base)
    assert os.listdir(base) == []


def test_export_rejects_bad_arguments():
    e = helpers.exported()
    with pytest.raises(ValueError, match="max_num_samples"):
        export.export_sampler(e.layer, os.path.join(e.work, "bad"), max_num_samples=0)
    with pytest.raises(ValueError, match="samplers.Sampler"):
        export.export_sampler(e.net, os.path.join(e.work, "bad"))
    with pytest.raises(ValueError, match="holds no exported sampler"):
        export.load_sampler(e.work)
