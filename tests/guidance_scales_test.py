"""One sampler across guidance scales (samplers.base guidance_scales, ddss_tf.guidance): at a
scale w its chain is the plain sampler holding the raw variables interpolated in numpy
between the two anchors around w; only those two anchors get a gradient; the search step
draws its scale from the anchors' range, the same on every replica; coefficients.json carries
the anchors. (`run_search` with a list of scales and the export serving any scale in the
range: tests/guidance_search_test.py.)"""

import json

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import denoisers, export, noise, samplers, schedules
from ddss_tf import guidance as guidance_lib
from ddss_tf.search import SearchConfig

import toy_networks

ANCHORS = (0.0, 1.0, 3.0)


def _eps(x, t):
    return 0.3 * x * tf.reshape(tf.cos(t / 700.0), [-1, 1, 1, 1])


def _at(scale):
    """A plain denoiser reporting a guidance scale, as ConditionalDenoiser.guided's do."""
    den = denoisers.from_eps_fn(_eps, schedules.linear_beta())
    den.guidance_scale = scale
    return den


def _anchored(seed=0, **kw):
    """A GGDM +PRED +TIME layer across ANCHORS, each anchor's variables moved apart."""
    layer = samplers.create("ggdm", _at(None), num_steps=4, pred=True, time=True,
                            guidance_scales=ANCHORS, **kw)
    rng = np.random.default_rng(seed)
    for a in layer.anchors:
        a.assign(a.numpy() + rng.normal(0, 0.2, a.shape).astype(np.float32))
    return layer


def _plain_at(layer, scale):
    """The same family without anchors, its raw variables interpolated in numpy at `scale`."""
    config = {k: v for k, v in layer.get_config().items() if k != "guidance_scales"}
    plain = samplers.from_config(config, _at(None))
    w = np.clip(scale, ANCHORS[0], ANCHORS[-1])
    for v, a in zip(plain.weights, layer.anchors):
        assert a.name == v.name + "_at_scales"
        values = a.numpy().astype(np.float64)
        v.assign(np.stack([np.interp(w, ANCHORS, values[(slice(None),) + j])
                           for j in np.ndindex(values.shape[1:])]).reshape(v.shape))
    return plain


@pytest.mark.parametrize("loop", [False, True])
@pytest.mark.parametrize("scale", [0.0, 0.4, 1.0, 2.2, 3.0, 5.0])
def test_the_chain_at_a_scale_is_the_plain_sampler_interpolated_in_numpy(scale, loop):
    layer = _anchored(loop=loop)
    x_T, z = noise.draw(3, 4, [3, 8, 8, 1])
    with layer.using_denoiser(_at(tf.constant(scale))):
        got = layer(x_T, z).numpy()
        coefs = {k: v.numpy() for k, v in layer.coefficient_tensors().items()}
    plain = _plain_at(layer, scale)
    np.testing.assert_allclose(got, plain(x_T, z).numpy(), rtol=1e-5, atol=1e-5)
    for key, value in plain.coefficients().items():
        np.testing.assert_allclose(coefs[key], value, rtol=1e-5, atol=1e-6)
    # In a graph (a SavedModel's signature, the search step) too.
    graph = tf.function(lambda w: _call_at(layer, w, x_T, z))
    np.testing.assert_allclose(graph(tf.constant(scale)).numpy(), got, rtol=1e-4, atol=1e-5)


def _call_at(layer, scale, x_T, z):
    with layer.using_denoiser(_at(scale)):
        return layer(x_T, z)


def test_only_the_anchors_around_the_scale_learn():
    layer = _anchored()
    anchors = {id(a) for a in layer.anchors}
    assert [id(v) for v in layer.trainable_variables] == [id(a) for a in layer.anchors]
    assert all(not v.trainable for v in layer.weights if id(v) not in anchors)
    x_T, z = noise.draw(4, 4, [2, 8, 8, 1])
    with tf.GradientTape() as tape, layer.using_denoiser(_at(tf.constant(2.0))):
        loss = tf.reduce_sum(layer(x_T, z) ** 2)
    for g in tape.gradient(loss, layer.anchors):
        g = g.numpy()
        assert np.all(g[0] == 0) and np.any(g[1] != 0) and np.any(g[2] != 0)
        # d/d(anchor j) is weight_j times the gradient at the interpolated values: 1/2 each.
        np.testing.assert_allclose(g[1], g[2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.scale_weights(2.5).numpy(), [0, 0.25, 0.75])
    np.testing.assert_allclose(layer.scale_weights(-1.0).numpy(), [1, 0, 0])


def test_set_guidance_scale_config_and_coefficients_json_round_trip(tmp_path):
    layer = _anchored()
    layer.set_guidance_scale(0.5)
    want = _plain_at(layer, 0.5).coefficients()
    for key, value in layer.coefficients().items():  # on a denoiser without a scale
        np.testing.assert_allclose(value, want[key], rtol=1e-6, atol=1e-7)
    with layer.using_denoiser(_at(2.0)):  # and on one with another scale: the stored ones
        for key, value in layer.coefficients().items():
            np.testing.assert_allclose(value, want[key], rtol=1e-6, atol=1e-7)
    path = export.write_coefficients(layer, str(tmp_path / "c.json"), "m:x", image_shape=[8, 8, 1])
    doc = json.loads(open(path).read())
    assert doc["layer_config"]["guidance_scales"] == list(ANCHORS)
    assert "mu_x0_logits_at_scales" in doc["variables"]
    rebuilt = export.load_coefficients(path, _at(None), check_fingerprint=False)
    x_T, z = noise.draw(5, 4, [2, 8, 8, 1])
    for w in (0.5, 2.0):
        np.testing.assert_array_equal(_call_at(rebuilt, w, x_T, z).numpy(),
                                      _call_at(layer, w, x_T, z).numpy())


def _plain(seed, num_steps=4):
    """A GGDM +PRED +TIME layer without anchors, its variables moved from the start."""
    layer = samplers.create("ggdm", _at(None), num_steps=num_steps, pred=True, time=True)
    rng = np.random.default_rng(seed)
    for v in layer.weights:
        v.assign(v.numpy() + rng.normal(0, 0.2, v.shape).astype(np.float32))
    return layer


@pytest.mark.parametrize("loop", [False, True])
def test_started_from_one_sampler_per_anchor_it_is_each_at_its_anchor(loop):
    learned = [_plain(seed) for seed in (1, 2, 3)]
    layer = samplers.create("ggdm", _at(None), num_steps=4, pred=True, time=True, loop=loop,
                            guidance_scales=ANCHORS)
    layer.start_from(learned)
    x_T, z = noise.draw(6, 4, [3, 8, 8, 1])
    for w, plain in zip(ANCHORS, learned):
        np.testing.assert_allclose(_call_at(layer, tf.constant(w), x_T, z).numpy(),
                                   plain(x_T, z).numpy(), rtol=1e-5, atol=1e-6)
    # Between anchors: the raw variables interpolated (the numpy reference above).
    np.testing.assert_allclose(_call_at(layer, tf.constant(2.0), x_T, z).numpy(),
                               _plain_at(layer, 2.0)(x_T, z).numpy(), rtol=1e-5, atol=1e-6)
    # What coefficients() reports: the largest anchor's.
    for key, value in learned[-1].coefficients().items():
        np.testing.assert_allclose(layer.coefficients()[key], value, rtol=1e-6, atol=1e-7)
    # One sampler for every anchor; and a plain layer takes one plain sampler's values.
    layer.start_from(learned[:1])
    np.testing.assert_allclose(_call_at(layer, tf.constant(3.0), x_T, z).numpy(),
                               learned[0](x_T, z).numpy(), rtol=1e-5, atol=1e-6)
    plain = samplers.create("ggdm", _at(None), num_steps=4, pred=True, time=True)
    plain.start_from(learned[1:2])
    np.testing.assert_array_equal(plain(x_T, z).numpy(), learned[1](x_T, z).numpy())


def test_start_from_refuses_samplers_built_otherwise():
    layer = samplers.create("ggdm", _at(None), num_steps=4, pred=True, time=True,
                            guidance_scales=ANCHORS)
    with pytest.raises(ValueError, match=r"one learned sampler or one per anchor \(3\), got 2"):
        layer.start_from([_plain(1), _plain(2)])
    with pytest.raises(ValueError, match=r"differs in num_steps \(5, here 4\)"):
        layer.start_from([_plain(1, num_steps=5)])
    with pytest.raises(ValueError, match=r"differs in time \(False, here True\)"):
        layer.start_from([samplers.create("ggdm", _at(None), num_steps=4, pred=True)])
    with pytest.raises(ValueError, match="not across scales"):
        layer.start_from([_anchored()])


def test_a_search_across_scales_validates_at_and_between_its_anchors():
    assert guidance_lib.validation_scales((0, 1, 3)) == (0.0, 0.5, 1.0, 2.0, 3.0)
    assert guidance_lib.validation_scales([1.0, 4.0]) == (1.0, 2.5, 4.0)


def test_bad_anchors_are_refused():
    den = _at(None)
    for bad, why in (([1.0], "2 or more increasing"), ([0, 2, 1], "2 or more increasing"),
                     ([-1, 1], "2 or more increasing"), ("ab", "a list of numbers")):
        with pytest.raises(ValueError, match=f"guidance_scales must (hold|be) .*{why}"):
            samplers.create("ggdm", den, num_steps=3, guidance_scales=bad)
    with pytest.raises(ValueError, match="the ddim family has no coefficients to learn"):
        samplers.create("ddim", den, num_steps=3, guidance_scales=[0, 1])
    samplers.create("ddim", den, num_steps=3, time=True, guidance_scales=[0, 1])  # its times
    with pytest.raises(ValueError, match="must increase, got"):
        SearchConfig(guidance_scale=[3.0, 1.0]).validate()
    cfg = SearchConfig(guidance_scale=[0.0, 1.0, 3.0])
    assert cfg.run_name() == "ggdm_pred_time_k10_w0-1-3"
    assert cfg.label() == "DDSS GGDM +PRED +TIME across w 0..3"
    assert cfg.evaluation_scale() == 3.0 and cfg.guidance_anchors() == ANCHORS
    assert SearchConfig(guidance_scale=2.0).guidance_anchors() is None


@pytest.fixture(scope="module")
def conditional():
    return denoisers.from_keras_model(toy_networks.conditional_eps_model(), schedules.linear_beta())


def test_the_step_scale_is_drawn_from_the_range_and_shared_by_replicas(conditional):
    labels = np.arange(10).repeat(3)
    g = guidance_lib.Guidance(conditional, 3.0, labels, 10)
    layer = samplers.create("ggdm", g.unbound(), num_steps=3, guidance_scales=[1.0, 3.0])
    single = samplers.create("ggdm", g.unbound(), num_steps=3)
    scales = np.array([float(g.step_scale(layer, noise.step_key(0, s))) for s in range(400)])
    assert scales.min() >= 1.0 and scales.max() <= 3.0
    # Half the steps at an anchor, each equally likely; the rest uniform in the range.
    at_anchor = (scales == 1.0) | (scales == 3.0)
    assert abs(at_anchor.mean() - guidance_lib.ANCHOR_PROBABILITY) < 0.08
    assert abs((scales == 1.0).mean() - (scales == 3.0).mean()) < 0.08
    inside = scales[~at_anchor]
    assert inside.min() < 1.1 and inside.max() > 2.9 and abs(inside.mean() - 2.0) < 0.12
    assert abs(np.mean(inside < 1.5) - 0.25) < 0.08  # uniform
    assert list(scales) == [float(g.step_scale(layer, noise.step_key(0, s))) for s in range(400)]
    assert g.step_scale(single, noise.step_key(0, 1)) == 3.0
    assert g.scale_range(layer) == (1.0, 3.0) and g.scale_range(single) == (3.0, 3.0)
