"""Samplers against float64 numpy implementations of the published update rules.

Each reference is written from the paper's equations, on the schedule's discrete
alpha_bar table at the stride's integer times (no log-SNR interpolation), with the
exact eps of Gaussian data; the layers run in float32.
"""

import math

import numpy as np
import pytest

from ddss_tf import samplers
from ddss_tf import noise as noise_lib
from ddss_tf import schedules

import samplers_gaussian as gauss

T = 1000
K = 10
SHAPE = [8, 3, 3, 1]


def _setup(stride, seed=0):
    sched = schedules.linear_beta(T)
    taus = schedules.stride(stride, T, K)[::-1]
    x_T, noise = noise_lib.draw(seed, K, SHAPE)
    x_T, noise = (a.numpy().astype(np.float64) for a in (x_T, noise))
    return sched, taus, sched.alpha_bars[taus], x_T, noise


def _predict(ab_t, x):
    """eps_hat, and x0_hat = (x_t - sqrt(1 - alpha_bar) eps_hat) / sqrt(alpha_bar) (Ho et al. eq. 15)."""
    eps = gauss.eps(math.sqrt(ab_t), math.sqrt(1 - ab_t), x)
    return (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t), eps


def ddpm_reference(abs_, x, noise, variance):
    """Ho et al. 2020 eq. 6-7, respaced (Nichol & Dhariwal 2021): beta_k = 1 - ab_t / ab_prev."""
    for i, ab_t in enumerate(abs_):
        x0, _ = _predict(ab_t, x)
        if i == len(abs_) - 1:
            return x0
        ab_prev = abs_[i + 1]
        beta = 1 - ab_t / ab_prev
        mean = (math.sqrt(ab_prev) * beta / (1 - ab_t) * x0
                + math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab_t) * x)
        var = (1 - ab_prev) / (1 - ab_t) * beta if variance == "small" else beta
        x = mean + math.sqrt(var) * noise[i]


def ddim_reference(abs_, x, noise, eta):
    """Song et al. 2021 eq. 12 with sigma of eq. 16."""
    for i, ab_t in enumerate(abs_):
        x0, eps = _predict(ab_t, x)
        if i == len(abs_) - 1:
            return x0
        ab_prev = abs_[i + 1]
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_prev)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev - sigma ** 2) * eps + sigma * noise[i]


def _lam(ab):
    """DPM-Solver's lambda = log(alpha / sigma)."""
    return math.log(math.sqrt(ab) / math.sqrt(1 - ab))


def dpm_solver_pp_2m_reference(abs_, x):
    """Lu et al. 2022 (DPM-Solver++), Algorithm 2; the final step to data is first order."""
    prev_x0, prev_h = None, None
    for i, ab_t in enumerate(abs_):
        x0, _ = _predict(ab_t, x)
        if i == len(abs_) - 1:
            return x0                      # alpha_s = 1, sigma_s = 0, e^{-h} = 0: x_s = x0
        ab_s = abs_[i + 1]
        h = _lam(ab_s) - _lam(ab_t)
        if prev_x0 is None:
            d = x0
        else:
            r = prev_h / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * prev_x0
        x = math.sqrt((1 - ab_s) / (1 - ab_t)) * x - math.sqrt(ab_s) * (math.exp(-h) - 1) * d
        prev_x0, prev_h = x0, h


def _unipc_update(hist, ms, x, ab_s, order, m_new=None):
    """Zhao et al. 2023, UniP (m_new None) or UniC, bh2, data prediction, general R / b solve.

    hist: alpha_bar of the previous times, newest last (the step starts at hist[-1]);
    ms: their data predictions; x: the state at hist[-1].
    """
    lams = [_lam(ab) for ab in hist]
    lam_s0, m0 = lams[-1], ms[-1]
    h = _lam(ab_s) - lam_s0
    rks, d1s = [], []
    for k in range(1, order):
        rk = (lams[-1 - k] - lam_s0) / h
        rks.append(rk)
        d1s.append((ms[-1 - k] - m0) / rk)
    rks.append(1.0)
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = math.expm1(hh)
    rows, b, fact = [], [], 1
    for k in range(1, order + 1):
        rows.append(np.power(rks, k - 1))
        b.append(h_phi_k * fact / b_h)
        fact *= k + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    x_ = math.sqrt((1 - ab_s) / (1 - hist[-1])) * x - math.sqrt(ab_s) * h_phi_1 * m0
    if m_new is None:
        res = 0.5 * d1s[0] if order == 2 else 0.0
        return x_ - math.sqrt(ab_s) * b_h * res
    rhos = [0.5] if order == 1 else np.linalg.solve(np.array(rows), np.array(b))
    res = sum(r * d for r, d in zip(rhos[:-1], d1s))
    return x_ - math.sqrt(ab_s) * b_h * (res + rhos[-1] * (m_new - m0))


def unipc_reference(abs_, x):
    """UniPC-2 (bh2): order 1 first, then 2; corrector after every evaluation but the last."""
    hist, ms, last_x, orders = [], [], None, []
    for i, ab_t in enumerate(abs_):
        m, _ = _predict(ab_t, x)
        if i == len(abs_) - 1:
            return m
        if i > 0:
            x = _unipc_update(hist, ms, last_x, ab_t, orders[-1], m_new=m)
        hist.append(ab_t)
        ms.append(m)
        order = 1 if i == 0 else 2
        orders.append(order)
        last_x = x
        x = _unipc_update(hist, ms, x, abs_[i + 1], order)


@pytest.mark.parametrize("stride", ["linear", "quadratic"])
@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_matches_reference(stride, variance):
    sched, _, abs_, x_T, noise = _setup(stride)
    layer = samplers.create("ddpm", gauss.denoiser(sched), num_steps=K, stride=stride, variance=variance)
    got = layer(x_T, noise).numpy()
    np.testing.assert_allclose(got, ddpm_reference(abs_, x_T, noise, variance), atol=5e-6, rtol=0)


@pytest.mark.parametrize("stride", ["linear", "quadratic"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_matches_reference(stride, eta):
    sched, _, abs_, x_T, noise = _setup(stride)
    layer = samplers.create("ddim", gauss.denoiser(sched), num_steps=K, stride=stride, eta=eta)
    got = layer(x_T, noise).numpy()
    np.testing.assert_allclose(got, ddim_reference(abs_, x_T, noise, eta), atol=5e-6, rtol=0)


@pytest.mark.parametrize("stride", ["linear", "quadratic"])
def test_dpm_solver_pp_2m_matches_reference(stride):
    sched, _, abs_, x_T, _ = _setup(stride)
    layer = samplers.create("dpm_solver_pp_2m", gauss.denoiser(sched), num_steps=K, stride=stride)
    np.testing.assert_allclose(layer(x_T).numpy(), dpm_solver_pp_2m_reference(abs_, x_T),
                               atol=5e-6, rtol=0)


@pytest.mark.parametrize("stride", ["linear", "quadratic"])
def test_unipc_matches_reference(stride):
    sched, _, abs_, x_T, _ = _setup(stride)
    layer = samplers.create("unipc", gauss.denoiser(sched), num_steps=K, stride=stride)
    np.testing.assert_allclose(layer(x_T).numpy(), unipc_reference(abs_, x_T), atol=5e-6, rtol=0)


def test_ddim_eta_one_is_ddpm():
    sched, _, _, x_T, noise = _setup("quadratic", seed=3)
    den = gauss.denoiser(sched)
    ddim = samplers.create("ddim", den, num_steps=K, stride="quadratic", eta=1.0)
    ddpm = samplers.create("ddpm", den, num_steps=K, stride="quadratic")
    np.testing.assert_allclose(ddim(x_T, noise).numpy(), ddpm(x_T, noise).numpy(), atol=1e-5)
