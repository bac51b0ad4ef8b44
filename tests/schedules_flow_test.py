"""The rectified-flow schedule and the flow denoiser against closed forms in float64 numpy.

Rectified flow (SD3's shift k): flow time u = (t + 1) / (T + 1), noise level
s = k u / (1 + (k - 1) u), flow state (1 - s) x0 + s eps = c x_vp with c = sqrt((1 - s)^2 + s^2),
alpha = (1 - s) / c, sigma = s / c, lambda = 2 log((1 - s) / s).
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import denoisers, schedules

T = 1000
TIMES = np.array([0.0, 0.5, 1.0, 17.25, 499.0, 500.5, 998.0, 998.9, 999.0])


def _closed(t, num_timesteps, shift):
    """(s, alpha, sigma, lambda) from the formulas, float64."""
    u = (np.asarray(t, np.float64) + 1) / (num_timesteps + 1)
    s = shift * u / (1 + (shift - 1) * u)
    c = np.sqrt((1 - s) ** 2 + s ** 2)
    return s, (1 - s) / c, s / c, 2 * np.log((1 - s) / s)


@pytest.mark.parametrize("num_timesteps, shift", [(1000, 1.0), (1000, 3.0), (50, 0.5)])
def test_alpha_sigma_log_snr_and_their_inverses_are_the_closed_forms(num_timesteps, shift):
    sched = schedules.rectified_flow(num_timesteps, shift)
    t = TIMES * (num_timesteps - 1) / (T - 1)
    s, alpha, sigma, lam = _closed(t, num_timesteps, shift)
    np.testing.assert_allclose(sched.flow_sigma(t), s, rtol=1e-13)
    np.testing.assert_allclose(sched.alpha(t), alpha, rtol=1e-12)
    np.testing.assert_allclose(sched.sigma(t), sigma, rtol=1e-12)
    np.testing.assert_allclose(sched.alpha_bar(t), alpha ** 2, rtol=1e-12)
    np.testing.assert_allclose(sched.log_snr(t), lam, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sched.t_from_log_snr(lam), t, atol=1e-9)
    np.testing.assert_allclose(sched.t_from_flow_sigma(s), t, atol=1e-9)
    np.testing.assert_allclose(sched.flow_scale(t), 1 / (alpha + sigma), rtol=1e-12)
    # The ends: finite log-SNR, 2 log(T / k) and -2 log(k T).
    np.testing.assert_allclose(sched.log_snr([0.0, num_timesteps - 1.0]),
                               [2 * np.log(num_timesteps / shift),
                                -2 * np.log(shift * num_timesteps)], rtol=1e-12)
    # Outside [0, T - 1]: clipped, as every schedule.
    np.testing.assert_allclose(sched.log_snr([-5.0, num_timesteps + 3.0]), lam[[0, -1]])


def test_tensors_answer_as_numpy_and_are_differentiable_at_the_ends():
    sched = schedules.rectified_flow(T, 3.0)
    for dtype, rtol in ((tf.float64, 1e-12), (tf.float32, 3e-6)):
        t = tf.constant(TIMES, dtype)
        for name in ("alpha", "sigma", "log_snr", "flow_sigma", "flow_scale"):
            got = getattr(sched, name)(t)
            assert got.dtype == dtype
            np.testing.assert_allclose(got.numpy(), getattr(sched, name)(TIMES), rtol=rtol,
                                       atol=rtol)
        back = sched.t_from_log_snr(sched.log_snr(t))
        np.testing.assert_allclose(back.numpy(), TIMES, atol=1e-9 if dtype == tf.float64 else 3e-3)
    t = tf.Variable([1e-6, 500.0, T - 1 - 1e-6], dtype=tf.float64)
    with tf.GradientTape(persistent=True) as tape:
        values = [getattr(sched, n)(t) for n in ("alpha", "sigma", "log_snr", "flow_scale")]
    for v in values:
        g = tape.gradient(v, t).numpy()
        assert np.all(np.isfinite(g)) and np.all(g != 0)
    # d lambda / dt against a central difference.
    g = tape.gradient(values[2], t).numpy()
    h = 1e-5
    fd = (sched.log_snr(t.numpy() + h) - sched.log_snr(t.numpy() - h)) / (2 * h)
    np.testing.assert_allclose(g[1], fd[1], rtol=1e-6)


def test_flow_state_is_the_variance_preserving_state_scaled():
    """c x_vp = (1 - s) x0 + s eps, c = 1 / (alpha + sigma), and x_vp = alpha x0 + sigma eps."""
    sched = schedules.rectified_flow(T, 3.0)
    rng = np.random.default_rng(0)
    x0, eps = rng.uniform(-1, 1, (len(TIMES), 5)), rng.standard_normal((len(TIMES), 5))
    s, alpha, sigma, _ = _closed(TIMES, T, 3.0)
    x_vp = sched.alpha(TIMES)[:, None] * x0 + sched.sigma(TIMES)[:, None] * eps
    x_flow = sched.flow_scale(TIMES)[:, None] * x_vp
    np.testing.assert_allclose(x_flow, (1 - s)[:, None] * x0 + s[:, None] * eps, atol=1e-13)
    np.testing.assert_allclose(x_vp / (alpha + sigma)[:, None], x_flow, atol=1e-13)


def test_tables_config_and_json_round_trip():
    sched = schedules.rectified_flow(200, 3.0, 1000.0)
    _, alpha, _, lam = _closed(np.arange(200), 200, 3.0)
    np.testing.assert_allclose(sched.log_snrs, lam, rtol=1e-13)
    np.testing.assert_allclose(sched.alpha_bars, alpha ** 2, rtol=1e-12)
    np.testing.assert_allclose(np.cumprod(1 - sched.betas), sched.alpha_bars, rtol=1e-10)
    config = json.loads(json.dumps(sched.get_config()))
    assert config == {"kind": "rectified_flow", "num_timesteps": 200, "shift": 3.0,
                      "time_scale": 1000.0}
    again = schedules.from_config(config)
    assert isinstance(again, schedules.Schedule) and schedules.is_flow(again)
    assert schedules.same(again, sched) and not schedules.same(
        again, schedules.rectified_flow(200, 3.0, 1.0))
    assert not schedules.same(sched, schedules.linear_beta(200))
    assert "rectified_flow" in schedules.names()
    by_name = schedules.from_config({"kind": "rectified_flow", "num_timesteps": 1000})
    assert (by_name.shift, by_name.time_scale) == (1.0, 1.0)
    np.testing.assert_allclose(by_name.network_time(TIMES), (TIMES + 1) / (T + 1), rtol=1e-13)


@pytest.mark.parametrize("config, match", [
    ({"shift": 0.0}, r"shift must be a finite number > 0, got 0.0"),
    ({"shift": -3}, r"shift must be a finite number > 0"),
    ({"shift": float("nan")}, r"shift must be a finite number > 0"),
    ({"time_scale": 0}, r"time_scale must be a finite number > 0"),
    ({"time_scale": True}, r"time_scale must be a finite number > 0"),
    ({"num_timesteps": 1}, r"integer in \[2, 1000000\]"),
])
def test_bad_flow_schedules(config, match):
    with pytest.raises(ValueError, match=match):
        schedules.from_config(dict(kind="rectified_flow", **config))


def _flow_oracle(sched, x0, eps, seen):
    """A network that checks what it is called with (the flow state at time_scale * s) and
    returns the velocity eps - x0 of the data that made x_t."""

    def fn(x, t_net):
        seen.append((x.numpy(), t_net.numpy()))
        return tf.constant(eps - x0, x.dtype)

    return fn


def test_flow_denoiser_calls_the_network_on_the_flow_state_and_recovers_x0_and_eps():
    sched = schedules.rectified_flow(T, 3.0, 1000.0)
    rng = np.random.default_rng(1)
    t = np.array([0.0, 250.5, 700.0, 999.0])
    x0, eps = rng.uniform(-1, 1, (4, 2, 2, 1)), rng.standard_normal((4, 2, 2, 1))
    s = _closed(t, T, 3.0)[0][:, None, None, None]
    x_t = sched.alpha(t)[:, None, None, None] * x0 + sched.sigma(t)[:, None, None, None] * eps
    seen = []
    den = denoisers.from_fn(_flow_oracle(sched, x0, eps, seen), sched, prediction="flow")
    x0_hat, eps_hat = den(tf.constant(x_t), tf.constant(t))
    np.testing.assert_allclose(seen[0][0], (1 - s) * x0 + s * eps, atol=1e-12)
    np.testing.assert_allclose(seen[0][1], 1000.0 * s.ravel(), rtol=1e-12)
    np.testing.assert_allclose(x0_hat.numpy(), x0, atol=1e-9)
    np.testing.assert_allclose(eps_hat.numpy(), eps, atol=1e-9)
    # Clipping keeps the pair consistent with x_t, as for the other parametrisations.
    clipped = denoisers.from_fn(lambda x, tt: tf.constant(eps - 3 * x0), sched,
                                prediction="flow", clip_x0=True)
    c0, ce = clipped(tf.constant(x_t), tf.constant(t))
    assert np.abs(c0.numpy()).max() <= 1.0
    np.testing.assert_allclose(sched.alpha(t)[:, None, None, None] * c0.numpy()
                               + sched.sigma(t)[:, None, None, None] * ce.numpy(), x_t, atol=1e-9)


def test_guided_flow_model_combines_velocities_as_eps_and_x0():
    """Classifier-free guidance on the raw velocity equals guidance on x0 and on eps."""
    sched = schedules.rectified_flow(T, 3.0)
    rng = np.random.default_rng(2)
    per_label = rng.standard_normal((11, 2, 2, 1))           # a velocity per label, 10 = null

    def fn(x, t_net, c):
        return tf.gather(tf.constant(per_label, x.dtype), c) + 0.1 * x

    den = denoisers.ConditionalDenoiser(fn, sched, null_condition=10, prediction="flow")
    x_t, t, labels, w = tf.constant(rng.standard_normal((3, 2, 2, 1))), tf.constant(
        [10.0, 500.0, 990.0], tf.float64), tf.constant([1, 4, 7]), 2.5
    guided = den.guided(labels, w)(x_t, t)
    cond, uncond = den(x_t, t, labels), den(x_t, t, tf.fill([3], 10))
    for got, a, b in zip(guided, cond, uncond):
        np.testing.assert_allclose(got.numpy(), (1 + w) * a.numpy() - w * b.numpy(), atol=1e-12)


def test_flow_prediction_and_flow_schedule_go_together():
    with pytest.raises(ValueError, match="prediction flow .* needs a rectified_flow schedule, "
                                         "got linear_beta"):
        denoisers.from_fn(lambda x, t: x, schedules.linear_beta(), prediction="flow")
    with pytest.raises(ValueError, match="rectified_flow schedule is for flow models.*not eps"):
        denoisers.from_fn(lambda x, t: x, schedules.rectified_flow(), prediction="eps")
    assert denoisers.predictions() == ("eps", "x", "v", "flow")
