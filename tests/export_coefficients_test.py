"""coefficients.json: exact round trip, the model check, malformed files, atomic writes; and
the seeded-noise / uint8 ops an export shares with the in-memory sampler."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import export_helpers as helpers
from ddss_tf import denoisers, export, images, models, noise as noise_lib
from ddss_tf import schedules
from ddss_tf import files


@pytest.fixture(scope="module")
def den():
    return helpers.tiny_denoiser()


@pytest.mark.parametrize("family,options", [
    ("ggdm", dict(pred=True, time=True)), ("ggdm", dict(init="ddim")), ("vars", {}),
    ("rddim", dict(time=True)), ("ddim_sigma", {}), ("ddpm", dict(variance="large")),
    ("ddim", dict(eta=0.5, stride="linear")), ("unipc", {}), ("ipndm", {}),
    ("ggdm", dict(pred=True, init="unipc_3")),
])
def test_json_round_trip_is_exact(den, tmp_path, family, options):
    layer = helpers.learned_layer(den, family, **options)
    path = export.write_coefficients(layer, str(tmp_path / "c.json"),
                                     export.model_fingerprint(den.network))
    rebuilt = export.load_coefficients(path, den)
    assert rebuilt.get_config() == layer.get_config()
    for a, b in zip(rebuilt.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)
    want = layer.coefficients()
    for key, value in rebuilt.coefficients().items():
        np.testing.assert_array_equal(value, want[key], err_msg=key)
    x_T, noise = noise_lib.draw(3, layer.num_steps, [2, 8, 8, 1])
    np.testing.assert_array_equal(rebuilt(x_T, noise).numpy(), layer(x_T, noise).numpy())
    doc = json.load(open(path))
    assert doc["family"] == family and doc["num_steps"] == helpers.K
    assert doc["query_times"] == doc["coefficients"]["query_times"]
    assert doc["model"]["image_shape"] == [8, 8, 1]
    np.testing.assert_array_equal(np.float32(doc["query_times"]),
                                  np.float32(layer.query_times()))


@pytest.fixture(scope="module")
def written():
    return helpers.exported().coefficients


def test_another_model_is_refused_with_every_mismatch_in_one_error(written):
    other = denoisers.from_keras_model(helpers.tiny_net(seed=5), schedules.cosine(), clip_x0=True)
    with pytest.raises(ValueError) as info:
        export.load_coefficients(written, other)
    message = str(info.value)
    assert "does not match the model" in message
    for part in ("weights fingerprint", "schedule", "clip_x0"):
        assert part in message


def test_image_shape_and_data_range_are_checked(written):
    wide = helpers.tiny_denoiser(helpers.tiny_net(image_shape=(16, 16, 1)), data_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"image shape \[8, 8, 1\] != \[16, 16, 1\].*data_range"):
        export.load_coefficients(written, wide, check_fingerprint=False)


def test_the_same_weights_under_another_name_are_accepted(written):
    same = helpers.tiny_denoiser(helpers.tiny_net(name="renamed_copy"))
    layer = export.load_coefficients(written, same)
    assert layer.family == "ggdm" and layer.num_steps == helpers.K


def test_a_plain_function_denoiser_needs_the_fingerprint_check_off(written):
    fn_den = denoisers.from_eps_fn(lambda x, t: tf.zeros_like(x), schedules.linear_beta())
    with pytest.raises(ValueError, match="check_fingerprint=False"):
        export.load_coefficients(written, fn_den)
    assert export.load_coefficients(written, fn_den, check_fingerprint=False).pred


def _edited(src, tmp_path, edit):
    doc = json.load(open(src))
    edit(doc)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["coefficients"]["sigma"].__setitem__(1, 0.5), "coefficient sigma disagrees"),
    (lambda d: d["variables"].__setitem__("mu_logits", [0.0]), "variable mu_logits has shape"),
    (lambda d: d["variables"].pop("time_logits"), "holds variables"),
    (lambda d: d.pop("variables"), "missing variables"),
    (lambda d: d.__setitem__("format_version", 99), "format_version 99"),
    (lambda d: d.__setitem__("format", "other"), "not a ddss_tf coefficients.json"),
    (lambda d: d["schedule"].__setitem__("kind", "sigmoid"), "schedule .* invalid"),
    (lambda d: d["layer_config"].__setitem__("num_steps", 4), "inconsistent"),
])
def test_a_malformed_or_edited_file_is_one_clear_error(den, written, tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        export.load_coefficients(_edited(written, tmp_path, edit), den)


def test_unreadable_files(den, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.load_coefficients(str(tmp_path / "missing.json"), den)
    (tmp_path / "bad.json").write_text('{"format": "ddss_tf.coeff')
    with pytest.raises(ValueError, match="not a valid JSON coefficients.json .* truncated"):
        export.load_coefficients(str(tmp_path / "bad.json"), den)


def test_writes_are_atomic(den, tmp_path):
    path = str(tmp_path / "c.json")
    layer = helpers.learned_layer(den, "ddim_sigma")
    export.write_coefficients(layer, path, "tiny:0")
    before = open(path).read()
    with pytest.raises(RuntimeError):
        with files.atomic_file(path) as f:
            f.write("{half")
            raise RuntimeError("interrupted")
    layer.sigma_logits.assign([np.nan, 0.0])
    with pytest.raises(ValueError, match="not finite"):
        export.write_coefficients(layer, path, "tiny:0")
    assert open(path).read() == before
    assert os.listdir(tmp_path) == ["c.json"]


# ---- the ops an export shares with the in-memory sampler ----

@pytest.mark.parametrize("seed", [0, 7, 2 ** 31 + 5, 2 ** 32 + 3, 2 ** 40 + 2 ** 31 + 1])
def test_seed_pairs_draw_what_the_integer_seed_draws(seed):
    """A graph's int32 pair [hi, lo] (the serving signature's seed) draws what its integer
    does, eagerly and in a tf.function with a batch known only at run time."""
    pair = export.seed_pair(seed)
    want_x, want_noise = noise_lib.draw(seed, 2, [3, 4, 4, 1])
    x_T, noise = noise_lib.draw(pair, 2, [3, 4, 4, 1])
    np.testing.assert_array_equal(x_T, want_x)
    np.testing.assert_array_equal(noise, want_noise)
    graph_fn = tf.function(lambda s, n: noise_lib.draw(s, 2, [n, 4, 4, 1]),
                           input_signature=[tf.TensorSpec([None], tf.int32),
                                            tf.TensorSpec([], tf.int32)])
    gx, gn = graph_fn(tf.constant(pair, tf.int32), tf.constant(3))
    np.testing.assert_array_equal(gx, want_x)
    np.testing.assert_array_equal(gn, want_noise)


def test_the_exports_model_fingerprint_is_the_models():
    net = helpers.tiny_net()
    assert export.model_fingerprint(net) == models.fingerprint(net)


def test_seed_pair_rejects_out_of_range_seeds():
    for bad in (-1, 2 ** 63):
        with pytest.raises(ValueError, match=r"\[0, 2\*\*63\)"):
            export.seed_pair(bad)


def test_graph_uint8_matches_images_to_uint8_next_to_rounding_points():
    near_ties = (np.arange(256) + 0.5) / 255.0 * 2.0 - 1.0     # float32 values closest to k + 1/2
    x = np.concatenate([near_ties, np.random.RandomState(0).uniform(-1.2, 1.2, 1000)])
    x = x.astype(np.float32).reshape(-1, 1, 1, 1)
    np.testing.assert_array_equal(export.to_uint8(x, (-1.0, 1.0)), images.to_uint8(x))
    np.testing.assert_array_equal(export.to_uint8(x, (0.0, 2.0)), images.to_uint8(x, (0.0, 2.0)))
