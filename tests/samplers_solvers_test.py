"""The multistep ODE solvers against float64 numpy implementations of their published updates.

Each reference below is written from its paper's update rule (not from the layers'
coefficient code) and takes the data prediction as a callback predict(i, x) -> x0_hat:
with the exact x0_hat of Gaussian data it is compared with the float32 layer, and with an
arbitrary prediction it checks the solver's GGDM form (`ggdm.solver_form`), whose step
s_{i+1} = mu_x0[i+1] m_i + sum_l mu[i+1, l] s_l must hold whatever the predictions are.
The `edm` stride is checked against Karras et al.'s closed form.
"""

import functools
import math

import numpy as np
import pytest

from ddss_tf import samplers
from ddss_tf import noise as noise_lib
from ddss_tf import schedules
from ddss_tf.samplers import ggdm
from ddss_tf.samplers import times

import samplers_gaussian as gauss

T = 1000
SHAPE = [8, 3, 3, 1]


def _marginals(abs_):
    """alpha, sigma and DPM-Solver's lambda = log(alpha / sigma) of alpha_bar values [K]."""
    abs_ = np.asarray(abs_, np.float64)
    alpha, sigma = np.sqrt(abs_), np.sqrt(1.0 - abs_)
    return alpha, sigma, np.log(alpha / sigma)


def ipndm_reference(abs_, x, predict):
    """Zhang & Chen 2023 (iPNDM; k-diffusion's sample_ipndm): Adams-Bashforth of order
    min(4, i + 1) on dy / d sigma_ve = eps in y = x / alpha, sigma_ve = sigma / alpha; the
    step to sigma_ve = 0 returns the last x0_hat."""
    alpha, sigma, _ = _marginals(abs_)
    sigma_ve = sigma / alpha
    y, ds = x / alpha[0], []
    for i in range(len(abs_)):
        m = predict(i, alpha[i] * y)
        if i == len(abs_) - 1:
            return m
        ds.insert(0, (y - m) / sigma_ve[i])                 # eps_i, newest first
        order = min(4, i + 1)
        if order == 1:
            slope = ds[0]
        elif order == 2:
            slope = (3 * ds[0] - ds[1]) / 2
        elif order == 3:
            slope = (23 * ds[0] - 16 * ds[1] + 5 * ds[2]) / 12
        else:
            slope = (55 * ds[0] - 59 * ds[1] + 37 * ds[2] - 9 * ds[3]) / 24
        y = y + (sigma_ve[i + 1] - sigma_ve[i]) * slope


def dpm_solver_pp_reference(abs_, x, predict, order):
    """Lu et al. 2022 (DPM-Solver++), multistep, order min(order, i + 1): the first-order
    step, the 2M step of Algorithm 2, and the third-order multistep update of the reference
    code (D1 and D2 from divided differences in lambda); the step to data returns x0_hat."""
    alpha, sigma, lam = _marginals(abs_)
    ms = []
    for i in range(len(abs_)):
        ms.insert(0, predict(i, x))                          # newest first
        if i == len(abs_) - 1:
            return ms[0]
        h = lam[i + 1] - lam[i]
        phi_1 = math.expm1(-h)
        x_next = sigma[i + 1] / sigma[i] * x - alpha[i + 1] * phi_1 * ms[0]
        p = min(order, i + 1)
        if p == 2:
            r = (lam[i] - lam[i - 1]) / h
            x_next = x_next - 0.5 * alpha[i + 1] * phi_1 * (ms[0] - ms[1]) / r
        elif p == 3:
            r_0, r_1 = (lam[i] - lam[i - 1]) / h, (lam[i - 1] - lam[i - 2]) / h
            d1_0, d1_1 = (ms[0] - ms[1]) / r_0, (ms[1] - ms[2]) / r_1
            d1 = d1_0 + r_0 / (r_0 + r_1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r_0 + r_1)
            phi_2 = phi_1 / h + 1
            phi_3 = (phi_1 + h) / h ** 2 - 0.5
            x_next = x_next + alpha[i + 1] * phi_2 * d1 - alpha[i + 1] * phi_3 * d2
        x = x_next


def _unipc_update(lams, ms, x, lam_s, alpha_s, sigma_ratio, order, m_new=None):
    """Zhao et al. 2023, bh2, data prediction: UniP-p (m_new None; Alg. 2) or UniC-p (Alg. 1).

    lams, ms: lambda and data prediction at the last `order` times, newest first; the step
    starts at lams[0] from state x and ends at lam_s.
    """
    h = lam_s - lams[0]
    rks = [(lams[k] - lams[0]) / h for k in range(1, order)] + [1.0]
    d1s = [(ms[k] - ms[0]) / rks[k - 1] for k in range(1, order)]
    hh = -h
    b_h = math.expm1(hh)
    phi, fact, rows, b = b_h / hh - 1, 1, [], []
    for j in range(1, order + 1):
        rows.append(np.power(rks, j - 1))
        b.append(phi * fact / b_h)
        fact *= j + 1
        phi = phi / hh - 1 / fact
    rows, b = np.array(rows), np.array(b)
    x_ = sigma_ratio * x - alpha_s * b_h * ms[0]
    if m_new is None:
        rho = [] if order == 1 else [0.5] if order == 2 else np.linalg.solve(rows[:-1, :-1], b[:-1])
        return x_ - alpha_s * b_h * sum(r * d for r, d in zip(rho, d1s))
    rho = [0.5] if order == 1 else np.linalg.solve(rows, b)
    res = sum(r * d for r, d in zip(rho[:-1], d1s))
    return x_ - alpha_s * b_h * (res + rho[-1] * (m_new - ms[0]))


def unipc_reference(abs_, x, predict, order):
    """UniPC-p (bh2): predictor order min(order, i + 1), corrector of the same order after
    every evaluation but the last, whose x0_hat (of the uncorrected state) is returned."""
    alpha, sigma, lam = _marginals(abs_)
    lams, ms, last = [], [], None
    for i in range(len(abs_)):
        m = predict(i, x)
        if i == len(abs_) - 1:
            return m
        if i > 0:
            p = min(order, i)
            x = _unipc_update(lams, ms, last, lam[i], alpha[i], sigma[i] / sigma[i - 1], p, m)
        lams.insert(0, lam[i])
        ms.insert(0, m)
        last = x
        x = _unipc_update(lams, ms, x, lam[i + 1], alpha[i + 1], sigma[i + 1] / sigma[i],
                          min(order, i + 1))


REFERENCES = {
    "dpm_solver_pp_2m": functools.partial(dpm_solver_pp_reference, order=2),
    "dpm_solver_pp_3m": functools.partial(dpm_solver_pp_reference, order=3),
    "unipc": functools.partial(unipc_reference, order=2),
    "unipc_3": functools.partial(unipc_reference, order=3),
    "ipndm": ipndm_reference,
}


def _gaussian_predict(abs_):
    """x0_hat = (x - sigma eps_hat) / alpha with the exact eps of Gaussian data."""
    alpha, sigma, _ = _marginals(abs_)
    return lambda i, x: (x - sigma[i] * gauss.eps(alpha[i], sigma[i], x)) / alpha[i]


def test_every_solver_has_a_reference():
    assert sorted(REFERENCES) == sorted(samplers.solver_names())


@pytest.mark.parametrize("name, stride", [
    ("ipndm", "edm"), ("ipndm", "quadratic"),
    ("dpm_solver_pp_3m", "logsnr_uniform"), ("dpm_solver_pp_3m", "quadratic"),
    ("unipc_3", "logsnr_uniform"), ("unipc_3", "linear"),
    ("dpm_solver_pp_2m", "edm"), ("unipc", "edm")])
@pytest.mark.parametrize("k", [4, 10])
def test_solver_matches_its_reference(name, stride, k):
    sched = schedules.linear_beta(T)
    layer = samplers.create(name, gauss.denoiser(sched), num_steps=k, stride=stride)
    abs_ = sched.alpha_bar(layer.query_times())
    x_T = noise_lib.draw(0, k, SHAPE)[0].numpy().astype(np.float64)
    expected = REFERENCES[name](abs_, x_T, _gaussian_predict(abs_))
    # float32 rounding: 5e-6 at K = 10 as the other solver tests; K = 4's long steps weigh
    # the first x0_hat = (x - sigma eps) / alpha, alpha(T - 1) = 6e-3, more (DPM-Solver++(2M)
    # on the same grids: 9e-6)
    atol = 5e-6 if k == 10 else 3e-5
    np.testing.assert_allclose(layer(x_T).numpy(), expected, atol=atol, rtol=0)


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("k", [2, 3, 4, 7])
@pytest.mark.parametrize("stride", ["quadratic", "logsnr_uniform"])
def test_solver_form_steps_are_the_solver_steps(name, k, stride):
    """With arbitrary predictions m_i at the states s_i the network sees, the reference
    solver's next state is mu_x0[i+1] m_i + sum_l mu[i+1, l] s_l (float64, to rounding):
    the GGDM form that `ggdm.solver_form` derives from the layer's own steps."""
    sched = schedules.cosine(T)
    layer = samplers.create(name, gauss.denoiser(sched), num_steps=k, stride=stride)
    mu_x0, mu = ggdm.solver_form(layer)
    states, preds = [], []

    def predict(i, x):                 # any function of (i, x): the form holds for every one
        states.append(x)
        preds.append(np.sin(3.0 * x + i) + 0.1 * x * x)
        return preds[-1]

    x_T = np.random.default_rng(k).standard_normal(6)
    REFERENCES[name](sched.alpha_bar(layer.query_times()), x_T, predict)
    states = np.array(states)
    for i in range(k - 1):
        terms = np.concatenate([[mu_x0[i + 1] * preds[i]], mu[i + 1, :, None] * states])
        # rounding: iPNDM's reference works in x / alpha, up to 1 / alpha(T - 1) = 2e4 times x
        np.testing.assert_allclose(states[i + 1], terms.sum(0), rtol=0,
                                   atol=1e-10 * max(1.0, np.abs(terms).max()), err_msg=f"step {i}")
    assert not np.any(np.triu(mu)), "a state may only weigh earlier states"


@pytest.mark.parametrize("sched", [schedules.linear_beta(T), schedules.cosine(T)],
                         ids=["linear_beta", "cosine"])
@pytest.mark.parametrize("k", [1, 2, 5, 25])
def test_edm_stride_is_karras_grid_in_sigma_over_alpha(sched, k):
    """Karras et al. 2022 eq. 5 (rho = 7) between sigma/alpha at T - 1 and at 0."""
    t = times.initial_times(sched, "edm", k)
    assert t.shape == (k,) and t[0] == T - 1 and np.all(np.diff(t) < 0)
    if k == 1:
        return
    assert t[-1] == 0.0
    sigma_ve = np.exp(-0.5 * sched.log_snr(t))
    s_max, s_min = sigma_ve[0], sigma_ve[-1]
    closed = [(s_max ** (1 / 7) + i / (k - 1) * (s_min ** (1 / 7) - s_max ** (1 / 7))) ** 7
              for i in range(k)]
    np.testing.assert_allclose(sigma_ve, closed, rtol=1e-9)
    np.testing.assert_allclose([s_max, s_min], [np.sqrt(1 / sched.alpha_bars[i] - 1)
                                                for i in (T - 1, 0)], rtol=1e-12)


def test_edm_is_a_stride_and_ipndm_default():
    assert "edm" in samplers.stride_names()
    assert samplers.default_stride("ipndm") == "edm"
    assert {samplers.default_stride(n) for n in ("dpm_solver_pp_3m", "unipc_3")} == {"logsnr_uniform"}


def test_ggdm_starts_from_every_solver_of_the_registry():
    """One list: the registry's solver column is GGDM's solver inits."""
    assert ggdm.solver_inits() == tuple(samplers.solver_names())
    assert samplers.inits("ggdm") == ("ddpm", "ddim") + ggdm.solver_inits()
