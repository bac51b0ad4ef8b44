"""Samplers on a rectified-flow model with an exact velocity (Gaussian data).

References in float64 numpy, written in flow coordinates (x = (1 - s) x0 + s eps, the
network predicting v = eps - x0) from the schedulers flow users have, never through the
project's variance-preserving algebra:
  Euler: FlowMatchEulerDiscreteScheduler (diffusers) / KerasHub's SD3 scheduler: its grid
    (set_timesteps; KerasHub's call(step, K), the same for K >= 3) and its step
    x <- x + (sigma_next - sigma) v(x, sigma * 1000);
  DPM-Solver++(2M) and UniPC-2 (bh2) with diffusers' use_flow_sigmas grid, data prediction
    x0 = x - sigma v, alpha_t = 1 - sigma, sigma_t = sigma, lambda = log(alpha_t / sigma_t),
    lower order at the first step and at the last (to sigma = 0).
Every family is also run against the closed-form flow map of the data (flow_gaussian).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import denoisers
from ddss_tf import noise as noise_lib
from ddss_tf import samplers, schedules
from ddss_tf.samplers import times

import flow_gaussian as fg

T = 1000
SHIFT = 3.0
SHAPE = [8, 3, 3, 1]


def _sched(shift=SHIFT):
    return schedules.rectified_flow(T, shift, 1000.0)


def _shift(u, k=SHIFT):
    return k * u / (1 + (k - 1) * u)


def flow_match_euler_sigmas(k, shift=SHIFT):
    """FlowMatchEulerDiscreteScheduler(num_train_timesteps=T, shift).set_timesteps(K).sigmas."""
    train = _shift(np.linspace(1, T, T)[::-1] / T, shift)     # __init__: sigma_max, sigma_min
    timesteps = np.linspace(train[0] * T, train[-1] * T, k)
    return np.append(_shift(timesteps / T, shift), 0.0)


def keras_hub_sigmas(k, shift=SHIFT):
    """KerasHub's SD3 FlowMatchEulerDiscreteScheduler(T, shift)(step, K) at steps 0..K (its
    denoise_step takes sigma at `step` and next_sigma at `step + 1`): max(shift(timestep / T), 0)
    on timesteps from sigma_max T to sigma_min T."""
    sigma_min = _shift(1.0 / T, shift)
    start, end = T * 1.0, T * sigma_min
    timestep = start + np.arange(k + 1) * (end - start) / (k - 1)
    u = timestep / T
    return np.maximum(shift * u / (1 + (shift - 1) * u), 0.0)


def flow_sigmas(k, shift=SHIFT):
    """DPMSolverMultistepScheduler(use_flow_sigmas=True, flow_shift).set_timesteps(K).sigmas
    (final_sigmas_type "zero")."""
    alphas = np.linspace(1, 1 / T, k + 1)
    return np.append(np.flip(_shift(1.0 - alphas, shift))[:-1], 0.0)


def euler_reference(x, sigmas):
    """The FlowMatchEuler step on every sigma; the last step (to 0) returns x - s v = x0_hat."""
    for i in range(len(sigmas) - 1):
        v = fg.velocity(x, sigmas[i])               # the network at timestep sigma * 1000
        x = x + (sigmas[i + 1] - sigmas[i]) * v
    return x


def _flow_marginals(sigma):
    alpha_t, sigma_t = 1.0 - sigma, sigma
    return alpha_t, sigma_t, math.log(alpha_t) - math.log(sigma_t)


def dpm_solver_pp_2m_reference(x, sigmas):
    """diffusers' dpm_solver_first_order_update / multistep_dpm_solver_second_order_update
    (midpoint), flow_prediction; the step to sigma = 0 is first order (returns x0)."""
    ms, lams = [], []
    for i in range(len(sigmas) - 1):
        ms.append(x - sigmas[i] * fg.velocity(x, sigmas[i]))
        if sigmas[i + 1] == 0:
            return ms[-1]
        _, s0, lam_0 = _flow_marginals(sigmas[i])
        alpha_t, sigma_t, lam_t = _flow_marginals(sigmas[i + 1])
        lams.append(lam_0)
        h = lam_t - lam_0
        x_next = sigma_t / s0 * x - alpha_t * math.expm1(-h) * ms[-1]
        if i > 0:
            r0 = (lam_0 - lams[-2]) / h
            x_next = x_next - 0.5 * alpha_t * math.expm1(-h) * (ms[-1] - ms[-2]) / r0
        x = x_next


def _unipc_bh2(x, m0, lam_0, sigma_0, target, order, m_prev=None, lam_prev=None, m_new=None):
    """Zhao et al. 2023 (diffusers' multistep_uni_p_bh_update / multistep_uni_c_bh_update,
    bh2, data prediction, order <= 2): the predictor (m_new None) or the corrector."""
    alpha_t, sigma_t, lam_t = _flow_marginals(target)
    h = lam_t - lam_0
    hh = -h
    b_h = phi_1 = math.expm1(hh)
    x_ = sigma_t / sigma_0 * x - alpha_t * phi_1 * m0
    d1 = None if order == 1 else (m_prev - m0) / ((lam_prev - lam_0) / h)
    if m_new is None:
        return x_ if order == 1 else x_ - alpha_t * b_h * 0.5 * d1
    if order == 1:
        return x_ - alpha_t * b_h * 0.5 * (m_new - m0)
    r = (lam_prev - lam_0) / h
    k1 = phi_1 / hh - 1
    b = [k1 / b_h, 2 * (k1 / hh - 0.5) / b_h]
    rho = np.linalg.solve(np.array([[1.0, 1.0], [r, 1.0]]), b)
    return x_ - alpha_t * b_h * (rho[0] * d1 + rho[1] * (m_new - m0))


def unipc_reference(x, sigmas):
    """UniPC-2 bh2: predictor of order min(2, i + 1), the corrector of the same order after
    every evaluation; the step to sigma = 0 returns the last x0."""
    ms, lams, last, orders = [], [], None, []
    for i in range(len(sigmas) - 1):
        m = x - sigmas[i] * fg.velocity(x, sigmas[i])
        if sigmas[i + 1] == 0:
            return m
        lam_i = _flow_marginals(sigmas[i])[2]
        if i > 0:
            j = i - 1
            x = _unipc_bh2(last, ms[j], lams[j], sigmas[j], sigmas[i], orders[j],
                           ms[j - 1] if j else None, lams[j - 1] if j else None, m_new=m)
        ms.append(m)
        lams.append(lam_i)
        orders.append(min(2, i + 1))
        last = x
        x = _unipc_bh2(x, m, lam_i, sigmas[i], sigmas[i + 1], orders[i],
                       ms[i - 1] if i else None, lams[i - 1] if i else None)


def _x_T(k, seed=0):
    return noise_lib.draw(seed, k, SHAPE)[0].numpy().astype(np.float64)


@pytest.mark.parametrize("k", [3, 5, 10, 28])
def test_keras_hub_and_diffusers_build_the_same_euler_grid(k):
    np.testing.assert_allclose(keras_hub_sigmas(k), flow_match_euler_sigmas(k), rtol=1e-12,
                               atol=1e-15)


@pytest.mark.parametrize("k", [1, 2, 5, 10, 28])
def test_euler_is_flow_match_euler_on_its_grid(k):
    """DDIM (eta = 0) on the flow_euler grid is FlowMatchEulerDiscreteScheduler's Euler (and
    KerasHub SD3's euler_step): its sigmas but the first (1, pure noise: here the schedule's
    noisiest time), its step, its timesteps sigma * 1000."""
    sched = _sched()
    seen = []
    net = fg.network(1000.0)

    def fn(x, t_net):
        seen.append(t_net.numpy()[0])
        return net(x, t_net)

    layer = samplers.create("ddim", denoisers.from_fn(fn, sched, prediction="flow"),
                            num_steps=k, stride="flow_euler", remat=False)
    sigmas = flow_match_euler_sigmas(k)
    ours = np.append(sched.flow_sigma(layer.query_times()), 0.0)
    np.testing.assert_allclose(ours[1:], sigmas[1:], rtol=1e-12, atol=1e-15)
    assert sigmas[0] == 1.0 and ours[0] == _shift(T / (T + 1))   # 1 - 3.3e-4 at shift 3
    x_T = _x_T(k)
    got = layer(x_T).numpy()
    np.testing.assert_allclose(seen, 1000.0 * ours[:-1], rtol=2e-7)
    x_flow = x_T * np.sqrt((1 - ours[0]) ** 2 + ours[0] ** 2)
    np.testing.assert_allclose(got, euler_reference(x_flow, ours), atol=2e-6, rtol=0)


@pytest.mark.parametrize("name, reference", [("dpm_solver_pp_2m", dpm_solver_pp_2m_reference),
                                             ("unipc", unipc_reference)])
@pytest.mark.parametrize("k", [2, 3, 5, 10, 20])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_solvers_on_flow_sigmas_match_diffusers_formulas(name, reference, k, shift):
    sched = _sched(shift)
    layer = samplers.create(name, fg.denoiser(sched), num_steps=k)     # the flow default grid
    assert layer.stride == "flow_sigmas"
    sigmas = flow_sigmas(k, shift)
    np.testing.assert_allclose(np.append(sched.flow_sigma(layer.query_times()), 0.0), sigmas,
                               rtol=1e-12)
    x_T = _x_T(k)
    x_flow = x_T * np.sqrt((1 - sigmas[0]) ** 2 + sigmas[0] ** 2)
    np.testing.assert_allclose(layer(x_T).numpy(), reference(x_flow, sigmas), atol=3e-6, rtol=0)


# Every deterministic family against the closed-form flow map of the data on the logSNR-
# uniform grid: (family, options, max error at K = 40, order range over K = 20, 40, 80 or None).
# Measured at K = 40: 0.13, 1.2e-2, 5.5e-3, 5.5e-3, 2e-4, 9e-3 (the learnable ones as their start).
ODE_FAMILIES = [
    ("ddim", {}, 0.15, (0.9, 1.1)),
    ("dpm_solver_pp_2m", {}, 0.02, (1.7, 2.2)),
    ("dpm_solver_pp_3m", {}, 0.01, None),
    ("unipc", {}, 0.01, (2.5, 3.3)),
    ("unipc_3", {}, 5e-4, None),
    ("ipndm", {}, 0.015, None),
    ("ddim_sigma", {"init": "ddim"}, 0.15, None),
    ("rddim", {"init": "ddim"}, 0.15, None),
    ("ggdm", {"init": "ddim"}, 0.15, None),
    ("ggdm", {"init": "ddim", "pred": True, "time": True}, 0.15, None),
    ("ggdm", {"init": "unipc", "pred": True}, 0.01, None),
]
# Stochastic families (each learnable one at its DDPM start): the moments of N(m, S^2).
STOCHASTIC_FAMILIES = [("ddpm", {}), ("ddpm", {"variance": "large"}), ("ddim", {"eta": 1.0}),
                       ("ddim_sigma", {}), ("vars", {}), ("rddim", {}), ("ggdm", {})]


def test_every_family_is_checked_on_the_flow_model():
    assert {f for f, *_ in ODE_FAMILIES + STOCHASTIC_FAMILIES} == set(samplers.names())


@pytest.mark.parametrize("name, opts, error_at_40, order", ODE_FAMILIES)
def test_deterministic_families_converge_to_the_flow_map(name, opts, error_at_40, order):
    """Error against the exact flow from the first query time to the last (then E[x0 | x]):
    below the bound at K = 40, and for DDIM, DPM-Solver++(2M) and UniPC falling 2^order-fold
    per doubling of K (first, second and third order with its corrector)."""
    sched = _sched()
    den = fg.denoiser(sched)
    x_T = noise_lib.draw(0, 1, [64, 2, 2, 1])[0]
    errors = {}
    for k in (20, 40, 80) if order else (40,):
        layer = samplers.create(name, den, num_steps=k, stride="logsnr_uniform", remat=False,
                                **opts)
        exact = fg.exact_sample(x_T.numpy(), layer.query_times(), T, SHIFT)
        out = layer(x_T, tf.zeros([k] + x_T.shape.as_list()))       # sigma = 0: noise unused
        errors[k] = np.max(np.abs(out.numpy() - exact))
    assert errors[40] < error_at_40, errors
    if order:
        orders = np.log2([errors[20] / errors[40], errors[40] / errors[80]])
        assert np.all((orders > order[0]) & (orders < order[1])), (errors, orders)


def _ddpm_output_moments(abs_, variance):
    """(mean, std) of the K-step DDPM chain's output from x_T ~ N(0, 1) on Gaussian data with
    the exact x0_hat: Ho et al. eq. 6-7 respaced, every step linear in x, so the moments
    propagate exactly. x0_hat = E[x0 | x_t] = c1 x + c0 (x_t = a x0 + b eps)."""
    def x0_coefficients(ab):
        a = math.sqrt(ab)
        var = a * a * fg.S ** 2 + 1 - ab
        return a * fg.S ** 2 / var, fg.M - a * a * fg.S ** 2 * fg.M / var

    mean, var = 0.0, 1.0
    for i in range(len(abs_) - 1):
        ab_t, ab_s = abs_[i], abs_[i + 1]
        c1, c0 = x0_coefficients(ab_t)
        beta = 1 - ab_t / ab_s
        k0 = math.sqrt(ab_s) * beta / (1 - ab_t)
        k1 = math.sqrt(1 - beta) * (1 - ab_s) / (1 - ab_t)
        step_var = (1 - ab_s) / (1 - ab_t) * beta if variance == "small" else beta
        mean, var = (k0 * c1 + k1) * mean + k0 * c0, (k0 * c1 + k1) ** 2 * var + step_var
    c1, c0 = x0_coefficients(abs_[-1])
    return c1 * mean + c0, c1 * math.sqrt(var)


@pytest.mark.parametrize("name, opts", STOCHASTIC_FAMILIES)
def test_stochastic_families_sample_their_chains_closed_form_marginal(name, opts):
    """Each stochastic family (DDIM(1) and the learnable ones at their DDPM start are DDPM)
    against the exact output distribution of the K-step DDPM chain on this model."""
    k, n = 20, 20000
    layer = samplers.create(name, fg.denoiser(_sched()), num_steps=k, remat=False, **opts)
    x_T, noise = noise_lib.draw(5, k, [n, 1, 1, 1])
    x0 = layer(x_T, noise).numpy().ravel().astype(np.float64)
    mean, std = _ddpm_output_moments(_sched().alpha_bar(layer.query_times()),
                                     opts.get("variance", "small"))
    assert abs(std - fg.S) > 0.05 * fg.S      # 20 steps are visibly off the data's 0.5
    assert abs(x0.mean() - mean) < 5 * std / np.sqrt(n), (x0.mean(), mean)
    assert abs(x0.std() - std) < 5 * std / np.sqrt(2 * n), (x0.std(), std)


def test_flow_grids_belong_to_flow_schedules():
    vp, flow = schedules.linear_beta(T), _sched()
    assert {"flow_euler", "flow_sigmas"} <= set(samplers.stride_names())
    assert "flow_euler" not in samplers.stride_names(vp)
    assert samplers.stride_names(flow) == samplers.stride_names()
    with pytest.raises(ValueError, match="the flow_sigmas stride is a rectified-flow grid: it "
                                         "needs a rectified_flow schedule, not linear_beta"):
        samplers.create("unipc", denoisers.from_fn(lambda x, t: x, vp), num_steps=5,
                        stride="flow_sigmas")
    with pytest.raises(ValueError, match="repeats query times"):   # u = 1 and 0.92: both T - 1
        times.initial_times(schedules.rectified_flow(10, 3.0), "flow_euler", 10)
    # Defaults on a flow: Euler's grid, the solvers' flow sigmas; VP defaults unchanged.
    assert [samplers.default_stride(n, flow=True) for n in ("ddim", "ggdm", "unipc", "ipndm")] \
        == ["flow_euler", "flow_euler", "flow_sigmas", "edm"]
    assert samplers.default_stride("ggdm") == "quadratic"
    assert samplers.create("ggdm", fg.denoiser(flow), num_steps=4).stride == "flow_euler"


def test_learned_sampler_gradients_are_finite_and_equal_with_remat():
    """GGDM +PRED +TIME on the flow model (its first query at alpha = 3e-4 on the Euler grid)."""
    den = fg.denoiser(_sched())
    x_T, noise = noise_lib.draw(1, 6, [4, 3, 3, 1])
    grads = []
    for remat in (False, True):
        layer = samplers.create("ggdm", den, num_steps=6, pred=True, time=True, init="ddim",
                                remat=remat)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x_T, noise) - 0.2))
        grads.append([g.numpy() for g in tape.gradient(loss, layer.trainable_variables)])
    for g in grads[0]:
        assert np.all(np.isfinite(g)) and np.any(g != 0)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
