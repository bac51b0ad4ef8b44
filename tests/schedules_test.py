"""Schedule algebra against float64 numpy written from the papers' formulas."""

import math

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import schedules


def _ho_linear(T=1000, b0=1e-4, b1=0.02):
    betas = np.linspace(b0, b1, T, dtype=np.float64)
    return betas, np.cumprod(1 - betas)


def test_linear_beta_tables_match_ho_et_al():
    betas, ab = _ho_linear()
    sched = schedules.linear_beta()
    assert sched.num_timesteps == 1000
    np.testing.assert_allclose(sched.betas, betas, rtol=0, atol=0)
    np.testing.assert_allclose(sched.alpha_bars, ab, rtol=1e-12)
    t = np.arange(1000)
    np.testing.assert_allclose(sched.alpha_bar(t), ab, rtol=1e-10)
    np.testing.assert_allclose(sched.alpha(t), np.sqrt(ab), rtol=1e-10)
    np.testing.assert_allclose(sched.sigma(t), np.sqrt(1 - ab), rtol=1e-10)
    np.testing.assert_allclose(sched.log_snr(t), np.log(ab / (1 - ab)), rtol=1e-10)


def test_cosine_matches_nichol_dhariwal():
    T, s = 1000, 0.008
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    sched = schedules.cosine(T)
    # Before the 0.999 clip bites, alpha_bar_t = f(t + 1) / f(0).
    expected = np.array([f(t + 1) / f(0) for t in range(T)])
    unclipped = np.array([1 - f(t + 1) / f(t) for t in range(T)]) < 0.999
    np.testing.assert_allclose(sched.alpha_bars[unclipped], expected[unclipped], rtol=1e-9)
    assert sched.betas.max() <= 0.999


def test_real_t_interpolates_log_snr_linearly_and_continuously():
    sched = schedules.linear_beta()
    lam = sched.log_snrs
    t = np.array([0.25, 10.5, 998.75])
    lo = np.floor(t).astype(int)
    expected = lam[lo] + (t - lo) * (lam[lo + 1] - lam[lo])
    np.testing.assert_allclose(sched.log_snr(t), expected, rtol=1e-12)
    # Continuity at integers from both sides.
    for k in (1, 500, 998):
        np.testing.assert_allclose(sched.log_snr(k - 1e-9), lam[k], atol=1e-6)
        np.testing.assert_allclose(sched.log_snr(k + 1e-9), lam[k], atol=1e-6)
    # Clipped outside [0, T-1].
    np.testing.assert_allclose(sched.log_snr(np.array([-3.0, 2000.0])), lam[[0, -1]])


@pytest.mark.parametrize("make", [schedules.linear_beta, schedules.cosine])
def test_log_snr_round_trip_numpy_and_tensor(make):
    sched = make()
    t = np.array([0.0, 0.3, 17.0, 250.25, 640.9, 999.0])
    np.testing.assert_allclose(sched.t_from_log_snr(sched.log_snr(t)), t, atol=1e-7)
    t_tf = tf.constant(t, tf.float64)
    back = sched.t_from_log_snr(sched.log_snr(t_tf))
    np.testing.assert_allclose(back.numpy(), t, atol=1e-6)
    # float32 tensors agree with the float64 numpy answer.
    t32 = tf.constant(t, tf.float32)
    np.testing.assert_allclose(sched.alpha_bar(t32).numpy(), sched.alpha_bar(t), rtol=2e-6)
    np.testing.assert_allclose(sched.sigma(t32).numpy(), sched.sigma(t), rtol=2e-6, atol=1e-7)


def test_tensor_queries_are_differentiable_in_t():
    sched = schedules.linear_beta()
    t = tf.Variable([100.3, 600.7])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(sched.log_snr(t))
    g = tape.gradient(y, t).numpy()
    lam = sched.log_snrs
    np.testing.assert_allclose(g, [lam[101] - lam[100], lam[601] - lam[600]], rtol=1e-5)


@pytest.mark.parametrize("T,K", [(1000, 5), (1000, 10), (1000, 15), (1000, 20), (1000, 25), (100, 7)])
def test_strides_match_ddim_reference_formulas(T, K):
    linear = list(range(0, T, T // K))[:K]
    quadratic = [int(s) for s in list(np.linspace(0, np.sqrt(T * 0.8), K) ** 2)]
    np.testing.assert_array_equal(schedules.stride("linear", T, K), linear)
    np.testing.assert_array_equal(schedules.stride("quadratic", T, K), quadratic)
    trailing = schedules.stride("trailing", T, K)
    assert trailing[-1] == T - 1 and len(trailing) == K
    assert np.all(np.diff(trailing) > 0)
    np.testing.assert_allclose(np.diff(trailing), T / K, atol=1)


def test_config_round_trip():
    for sched in (schedules.linear_beta(500, 1e-4, 0.03), schedules.cosine(200)):
        again = schedules.from_config(sched.get_config())
        np.testing.assert_array_equal(again.betas, sched.betas)


@pytest.mark.parametrize("call,match", [
    (lambda: schedules.stride("cubic", 1000, 10), "accepted: linear, quadratic, trailing"),
    (lambda: schedules.stride("linear", 1000, 0), r"num_steps must be an integer in \[1, 1000\]"),
    (lambda: schedules.stride("linear", 100, 101), r"\[1, 100\]"),
    (lambda: schedules.stride("quadratic", 100, 60), "repeats time steps"),
    (lambda: schedules.from_config({"kind": "sigmoid"}), "accepted: cosine, linear_beta"),
    (lambda: schedules.linear_beta(1000, 0.02, 1e-4), "beta_start <= beta_end"),
    (lambda: schedules.linear_beta(1), r"integer in \[2, 1000000\]"),
])
def test_bad_input_names_what_is_accepted(call, match):
    with pytest.raises(ValueError, match=match):
        call()
