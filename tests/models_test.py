"""Bring your own model: Keras files and SavedModels load with their outputs intact, run a
search, export, and sample; a model that does not fit the contract fails with one line.

References are the original objects: the Keras model before saving, the tf.Module before
export, and samplers built on them directly (not through ddss_tf.models)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from absl import flags

from ddss_tf import (cli, denoisers, export, files, models, noise as noise_lib, samplers,
                     sampling, schedules)
from ddss_tf.search import SearchConfig, run_search
from ddss_tf.search import workdir as workdir_lib

import testing
import toy_networks

pytestmark = pytest.mark.usefixtures("isolated_cache")

_QUIET = lambda *a: None  # noqa: E731
_SHAPE = (8, 8, 1)


class _ModuleEps(tf.Module):
    """A SavedModel-only network (no Keras): two convolutions and t / T added in between."""

    def __init__(self):
        super().__init__()
        rng = np.random.RandomState(4)
        self.w1 = tf.Variable(rng.normal(0, 0.3, [3, 3, 1, 8]).astype(np.float32))
        self.w2 = tf.Variable(rng.normal(0, 0.3, [3, 3, 8, 1]).astype(np.float32))

    def eps(self, x_t, t):
        h = tf.nn.conv2d(x_t, self.w1, 1, "SAME") + tf.reshape(t, [-1, 1, 1, 1]) / 1000.0
        return tf.nn.conv2d(tf.nn.silu(h), self.w2, 1, "SAME")


def _save_module(module, path, fn, input_signature):
    module.serve = tf.function(fn, input_signature=input_signature)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def _spec(shape, dtype=tf.float32, name=None):
    return tf.TensorSpec(shape, dtype, name=name)


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    net = toy_networks.dense_time_eps_model()
    net.save(root / "eps.keras")
    net.save(root / "eps.h5")
    module = _ModuleEps()
    _save_module(module, str(root / "eps_saved_model"), lambda x_t, t: {"eps": module.eps(x_t, t)},
                 [_spec([None, *_SHAPE]), _spec([None])])
    with open(root / "cosine.json", "w") as f:
        json.dump(schedules.cosine(num_timesteps=500).get_config(), f)
    return dict(root=root, net=net, module=module, keras=str(root / "eps.keras"),
                h5=str(root / "eps.h5"), saved_model=str(root / "eps_saved_model"),
                schedule_json=str(root / "cosine.json"))


def _inputs(n=3, seed=0):
    rng = np.random.RandomState(seed)
    t = np.array([0.0, 17.5, 999.0][:n], np.float32)
    return rng.normal(size=(n, *_SHAPE)).astype(np.float32), t


def test_a_keras_file_loads_with_the_original_outputs_and_a_named_schedule(byo):
    x, t = _inputs()
    want = byo["net"]([x, t]).numpy()
    for path in (byo["keras"], byo["h5"]):
        net, sched = models.load(path, schedule="linear_beta", num_timesteps=200)
        np.testing.assert_allclose(net([x, t]).numpy(), want, rtol=1e-6, atol=1e-6)
        assert models.image_shape(net) == _SHAPE and not net.trainable_variables
        np.testing.assert_array_equal(sched.betas, np.linspace(1e-4, 0.02, 200))


def test_a_saved_model_is_a_frozen_keras_network_with_the_module_outputs(byo):
    module = byo["module"]
    net, sched = models.load(byo["saved_model"], schedule=byo["schedule_json"])
    np.testing.assert_array_equal(sched.betas, schedules.cosine(num_timesteps=500).betas)
    x, t = (tf.constant(v) for v in _inputs())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        got, want = net([x, t]), module.eps(x, t)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    # Differentiable in x_t (the search backpropagates through it), frozen in its weights.
    np.testing.assert_allclose(tape.gradient(got, x).numpy(), tape.gradient(want, x).numpy(),
                               rtol=1e-5, atol=1e-6)
    assert not net.trainable_variables and models.image_shape(net) == _SHAPE
    # The weights fingerprint sees the module's variables.
    digest = files.weights_digest([module.w1.numpy(), module.w2.numpy()])
    assert export.model_fingerprint(net) == f"eps_saved_model:{digest}"


def _search(byo, model, **kw):
    cfg = SearchConfig(model=model, num_steps=2, batch_size=8, train_steps=2, xla=False,
                       checkpoint_every=1, eval_every=1000, eval_samples=16, validation_samples=16, final_samples=16,
                       reference_steps=10, **kw)
    workdir = str(byo["root"] / f"run_{os.path.basename(model)}")
    return run_search(cfg, workdir, log=_QUIET), workdir


def _reference_layer(coefficients, denoiser):
    """The learned sampler rebuilt on a denoiser over the original network object."""
    return export.load_coefficients(coefficients, denoiser, remat=False, check_fingerprint=False)


def _tf1_from_noise(version_dir, x_T, noise):
    """The export's from_noise through the TF1 session loader (TF Serving's)."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], version_dir)
        sig = meta.signature_def["from_noise"]
        return sess.run(sig.outputs["images"].name, {sig.inputs["x_T"].name: x_T,
                                                     sig.inputs["noise"].name: noise})


@pytest.mark.parametrize("which", ["keras", "saved_model"])
def test_search_export_and_sample_on_a_brought_model(byo, which):
    if which == "keras":
        options = dict(schedule="linear_beta")
        sched = schedules.linear_beta()
        reference = denoisers.from_keras_model(byo["net"], sched)
    else:  # an x-predicting reading of the same module, with the schedule from a file
        options = dict(schedule=byo["schedule_json"], prediction="x")
        sched = schedules.cosine(num_timesteps=500)
        reference = denoisers.from_fn(byo["module"].eps, sched, prediction="x")
    result, workdir = _search(byo, byo[which], **options)
    coefficients = os.path.join(workdir, "coefficients.json")
    with open(coefficients) as f:
        doc = json.load(f)
    assert doc["schedule"] == sched.get_config()
    assert doc["model"]["prediction"] == options.get("prediction", "eps")
    learned = [r for r in result["records"] if r["role"] == "learned"]
    assert [r["sampler"][:9] for r in learned] == ["DDSS GGDM"]
    export_dir = os.path.join(workdir, result["export"])  # results.json: relative to the run

    layer = _reference_layer(coefficients, reference)
    x_T, noise = noise_lib.draw(5, layer.num_steps, [4, *_SHAPE])  # ddss_sample --seed=5 below
    want = np.clip(layer(x_T, noise).numpy(), -1, 1)
    # The export embeds the network: TF2 and the TF1 session loader give the original's images.
    exported = sampling.from_export(export_dir)
    np.testing.assert_allclose(exported.from_noise(x_T, noise)[0], want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(_tf1_from_noise(export_dir, x_T.numpy(), noise.numpy()),
                               want, rtol=0, atol=1e-5)
    # ddss_sample --coefficients on the brought model: the file's schedule and prediction.
    images, _ = sampling.draw(sampling.from_coefficients(coefficients, byo[which]), 4, seed=5,
                              batch_size=4)
    np.testing.assert_allclose(images, want, rtol=0, atol=1e-5)


def test_ddss_sample_binary_on_a_keras_file(byo, tmp_path):
    out = str(tmp_path / "ddim.npz")
    proc = testing.run_binary("ddss_sample", "--family=ddim", "--num_steps=3",
                              f"--model={byo['keras']}", "--schedule=cosine", "--num_timesteps=400",
                              "--prediction=v", "--num_samples=3", "--seed=2", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    layer = samplers.create("ddim", denoisers.from_keras_model(
        byo["net"], schedules.cosine(num_timesteps=400), prediction="v"), num_steps=3, remat=False)
    want, _ = sampling.draw(sampling.LayerSource(layer), 3, seed=2)
    np.testing.assert_allclose(np.load(out)["images"], want, rtol=0, atol=1e-6)


def test_the_binary_reports_a_bad_model_in_one_line(byo, tmp_path):
    proc = testing.run_binary("ddss_sample", "--family=ddim", f"--model={byo['keras']}",
                              f"--out={tmp_path}/s.npz")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert lines == [f"ddss_sample: error: model {byo['keras']!r} carries no noise schedule: give "
                     "one (accepted: cosine, linear_beta, rectified_flow with num_timesteps, or a "
                     "schedule .json file)"], proc.stderr[-2000:]


def _bad_saved_model(root, name, fn, signature):
    return _save_module(tf.Module(), str(root / name), fn, signature)


def _bad_models(root):
    """{case: path} of models that break the contract in one way each."""
    out = {}
    toy_networks.dense_time_eps_model(out_channels=2).save(root / "two_channels.keras")
    toy_networks.dense_time_eps_model(out_channels=3).save(root / "three_channels.keras")
    toy_networks.dense_time_eps_model(t_shape=(1,)).save(root / "t_column.keras")
    x = keras.Input(_SHAPE)
    keras.Model(x, keras.layers.Conv2D(1, 3, padding="same")(x)).save(root / "one_input.keras")
    (root / "junk.keras").write_bytes(b"not a zip file")
    (root / "notes.txt").write_text("hello")
    os.makedirs(root / "empty_dir", exist_ok=True)
    out.update(two_channels=root / "two_channels.keras",
               three_channels=root / "three_channels.keras", t_column=root / "t_column.keras",
               one_input=root / "one_input.keras", junk=root / "junk.keras",
               txt=root / "notes.txt", empty_dir=root / "empty_dir")
    image = _spec([None, *_SHAPE])
    out["int_t"] = _bad_saved_model(root, "int_t", lambda x_t, t: {"eps": x_t},
                                    [image, _spec([None], tf.int32)])
    out["three_inputs"] = _bad_saved_model(root, "three_inputs", lambda x_t, t, y: {"eps": x_t},
                                           [image, _spec([None]), _spec([None])])
    out["wrong_output"] = _bad_saved_model(root, "wrong_output",
                                           lambda x_t, t: {"eps": x_t[..., :1, :]},
                                           [image, _spec([None])])
    out["free_shape"] = _bad_saved_model(root, "free_shape", lambda x_t, t: {"eps": x_t},
                                         [_spec([None, None, None, 1]), _spec([None])])
    out["two_outputs"] = _bad_saved_model(root, "two_outputs", lambda x_t, t: {"a": x_t, "b": x_t},
                                          [image, _spec([None])])
    module = tf.Module()
    module.f = tf.function(lambda x_t, t: x_t, input_signature=[image, _spec([None])])
    tf.saved_model.save(module, str(root / "no_signature"), signatures={"other": module.f})
    out["no_signature"] = root / "no_signature"
    return {k: str(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return _bad_models(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case,kwargs,message", [
    ("/no/such/model.keras", {}, "unknown model '/no/such/model.keras': no such file or directory; "
     "accepted: digits, digits_cond or digits_flow (the bundled models), a ddss_train_model "
     "directory, a Keras model file"),
    ("txt", {}, "not a Keras file (.keras / .h5)"),
    ("empty_dir", {}, "holds neither config.json (ddss_train_model), saved_model.pb nor a "
     "`checkpoint` file"),
    ("junk", {}, "is not a Keras model file (a file starting with b'not a zi'): a .keras file "
     "is a zip archive"),
    ("three_channels", {}, "returns [(None, 8, 8, 3)], x_t is (None, 8, 8, 1): the output must "
     "have the input's shape"),
    ("two_channels", dict(prediction="x"), "a 2-channel output (eps and a learned variance) is "
     "accepted with prediction eps, not x"),
    ("t_column", {}, "takes inputs [(None, 8, 8, 1), (None, 1)]; the contract is"),
    ("one_input", {}, "takes inputs [(None, 8, 8, 1)]"),
    ("int_t", {}, "input t is int32, not float"),
    ("three_inputs", {}, "serving_default takes t float32 [None], x_t float32 [None, 8, 8, 1], "
     "y float32 [None]"),
    ("wrong_output", {}, "output eps has shape [None, 8, 1, 1], x_t has [None, 8, 8, 1]"),
    ("free_shape", {}, "has shape [None, None, None, 1]; H, W and C must be fixed"),
    ("two_outputs", {}, "must return one output, returns ['a', 'b']"),
    ("no_signature", {}, "no serving_default signature (it has: other)"),
    ("keras", dict(schedule=""), "carries no noise schedule: give one (accepted: cosine, "
     "linear_beta, rectified_flow with num_timesteps, or a schedule .json file)"),
    ("keras", dict(schedule="linear"), "unknown schedule 'linear' (not a name, no such file); "
     "accepted: cosine, linear_beta, rectified_flow (with num_timesteps) or a .json file"),
    ("keras", dict(schedule="bad_json"), "is invalid (unknown schedule None"),
    ("keras", dict(prediction="score"), "unknown prediction 'score'; accepted: eps, x, v"),
    ("digits", dict(schedule="cosine"), "model 'digits' carries its own schedule"),
    ("digits", dict(prediction="v"), "model 'digits' predicts eps, not v"),
])
def test_a_model_that_does_not_fit_fails_with_one_line(byo, bad, tmp_path, case, kwargs, message):
    kwargs = dict(dict(schedule="" if case == "digits" else "linear_beta"), **kwargs)
    if kwargs["schedule"] == "bad_json":
        (tmp_path / "bad.json").write_text(json.dumps({"num_timesteps": 10}))
        kwargs["schedule"] = str(tmp_path / "bad.json")
    model = byo.get(case) or bad.get(case) or case
    with pytest.raises(ValueError) as info:
        models.load(model, **kwargs)
    text = str(info.value)
    assert message in text and "\n" not in text, text


@pytest.mark.parametrize("which", ["keras", "saved_model"])
def test_a_learned_variance_output_samples_with_its_eps_channels(tmp_path, which):
    # iDDPM / ADM "learn_sigma" networks return 2C channels: eps, then the variance interpolation.
    if which == "keras":
        net = toy_networks.dense_time_eps_model(out_channels=2)
        path = str(tmp_path / "learned_variance.keras")
        net.save(path)
        full = lambda x_t, t: net([x_t, t])  # noqa: E731
    else:
        module = _ModuleEps()
        full = lambda x_t, t: tf.concat([module.eps(x_t, t), tf.sin(x_t)], -1)  # noqa: E731
        path = _save_module(module, str(tmp_path / "learned_variance"),
                            lambda x_t, t: {"out": full(x_t, t)}, [_spec([None, *_SHAPE]),
                                                                    _spec([None])])
    den, loaded = models.load_denoiser(path, schedule="linear_beta", num_timesteps=200)
    x, t = _inputs()
    assert loaded([x, t]).shape == (3, 8, 8, 2)
    np.testing.assert_allclose(den(x, t)[1].numpy(), full(x, t).numpy()[..., :1], atol=1e-6)
    # A sampler on it is the sampler on the first C channels of the network.
    eps_only = denoisers.from_eps_fn(lambda x_t, t: full(x_t, t)[..., :1],
                                     schedules.linear_beta(200))
    x_T, noise = noise_lib.draw(1, 4, [3, *_SHAPE])
    got, want = (samplers.create("ddpm", d, num_steps=4, remat=False)(x_T, noise)
                 for d in (den, eps_only))
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="accepted with prediction eps, not v"):
        models.load(path, schedule="linear_beta", prediction="v")


def _parsed(*argv):
    fv = flags.FlagValues()
    cli.define_model_flags(fv)
    cli.define_data_flags(fv)
    fv(["prog", *argv])
    return fv


def test_the_shared_flags_are_search_config_fields_with_its_defaults():
    defaults = _parsed()
    cfg = SearchConfig(**cli.model_options(defaults), **cli.data_options(defaults))
    assert cfg == SearchConfig()  # the digits default is unchanged
    fv = _parsed("--model=m.keras", "--schedule=cosine", "--num_timesteps=50", "--prediction=v",
                 "--dataset=imgs/", "--split=test")
    cfg = SearchConfig(**cli.model_options(fv), **cli.data_options(fv))
    assert models.options(cfg) == dict(model="m.keras", schedule="cosine", num_timesteps=50,
                                       prediction="v", model_preset="", image_size=0, ema=True)
    fv = _parsed("--model=ckpt/model.ckpt-5", "--model_preset=cifar10", "--noema")
    assert {k: v for k, v in cli.model_options(fv).items() if k in ("model_preset", "ema")} == \
        dict(model_preset="cifar10", ema=False)
    assert cli.model_options(_parsed("--image_size=32"))["image_size"] == 32
    assert (cfg.dataset, cfg.split) == ("imgs/", "test")
    with pytest.raises(cli.UsageError, match="--num_timesteps applies with --schedule=cosine"):
        cli.model_options(_parsed("--schedule=s.json", "--num_timesteps=50"))


def test_a_work_dir_from_before_the_model_options_still_resumes(tmp_path):
    cfg = SearchConfig()
    saved = json.loads(cfg.to_json())
    for key in ("schedule", "num_timesteps", "prediction"):
        del saved[key]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    workdir_lib.check_saved_config(str(tmp_path), cfg)  # no "different settings" error
    saved["prediction"] = "v"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="different prediction"):
        workdir_lib.check_saved_config(str(tmp_path), cfg)
