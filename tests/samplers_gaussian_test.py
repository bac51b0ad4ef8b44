"""Closed-form checks on Gaussian data N(m, s^2 I), whose denoiser and flow map are exact."""

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import samplers
from ddss_tf import noise as noise_lib
from ddss_tf import schedules
from ddss_tf.samplers import ggdm

import samplers_gaussian as gauss


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_with_all_steps_reproduces_data_moments(variance):
    t = 1000
    sched = schedules.linear_beta(t)
    n = 40000
    x_T, noise = noise_lib.draw(3, t, [n, 1, 1, 1])
    layer = samplers.create("ddpm", gauss.denoiser(sched), num_steps=t, stride="linear",
                            variance=variance, remat=False)
    x0 = layer(x_T, noise).numpy().ravel().astype(np.float64)
    # Monte-Carlo standard errors: s / sqrt(n) for the mean, s / sqrt(2 n) for the std.
    # The beta_tilde chain is exact in the limit T -> inf; at T = 1000 its output std is
    # 0.8% low for this data (computed from the linear-Gaussian chain), hence 2.5%.
    assert abs(x0.mean() - gauss.M) < 4 * gauss.S / np.sqrt(n)
    assert abs(x0.std() - gauss.S) < 0.025 * gauss.S


def _ode_errors(name, stride, steps):
    sched = schedules.linear_beta(1000)
    den = gauss.denoiser(sched)
    x_T, _ = noise_lib.draw(0, 1, [64, 2, 2, 1])
    errors = []
    for k in steps:
        layer = samplers.create(name, den, num_steps=k, stride=stride, remat=False)
        exact = gauss.exact_sample(sched, x_T.numpy(), layer.query_times())
        errors.append(np.max(np.abs(layer(x_T).numpy() - exact)))
    errors = np.array(errors)
    return errors, np.log2(errors[:-1] / errors[1:])


@pytest.mark.parametrize("name, stride, steps, order, last_error", [
    ("ddim", "linear", [10, 20, 40], (0.85, 1.15), 0.15),
    ("ddim", "logsnr_uniform", [20, 40, 80], (0.9, 1.1), 0.06),
    ("dpm_solver_pp_2m", "logsnr_uniform", [20, 40, 80], (1.8, 2.3), 3e-3),
    ("unipc", "logsnr_uniform", [20, 40, 80], (2.5, 3.5), 5e-4),
])
def test_ode_samplers_converge_to_the_flow_map_at_their_order(name, stride, steps, order, last_error):
    """Error vs the exact flow from tau_K to tau_1 (then x0_hat there) halves 2^order-fold per K doubling.

    DDIM(eta=0) is first order, DPM-Solver++(2M) second, UniPC-2 with its corrector third.
    """
    errors, orders = _ode_errors(name, stride, steps)
    assert errors[-1] < last_error, errors
    assert np.all((orders > order[0]) & (orders < order[1])), (errors, orders)


def _forward_ggdm(mu_x0, mu, sigma, x0, n, rng):
    """The GGDM forward process, visiting order: x^(i) = mu_x0[i] x0 + sum_l mu[i,l] x^(l) + sigma[i] z."""
    states = []
    for i in range(len(mu_x0)):
        x = mu_x0[i] * x0 + sigma[i] * rng.standard_normal(n)
        for l in range(i):
            x = x + mu[i, l] * states[l]
        states.append(x)
    return np.stack(states)


def test_theorem1_marginals_match_monte_carlo():
    rng = np.random.default_rng(0)
    k, n, x0 = 6, 400000, 1.5
    mu_x0 = rng.uniform(0.05, 0.9, k)
    mu = np.tril(rng.uniform(0.0, 0.6, [k, k]), -1)
    sigma = rng.uniform(0.1, 0.9, k)
    a, v = ggdm.theorem1(*(tf.constant(z, tf.float64) for z in (mu_x0, mu, sigma)))
    states = _forward_ggdm(mu_x0, mu, sigma, x0, n, rng)
    mean, var = states.mean(axis=1), states.var(axis=1)
    np.testing.assert_allclose(mean, a.numpy() * x0, atol=5 * np.sqrt(var.max() / n))
    np.testing.assert_allclose(var, v.numpy(), rtol=5 * np.sqrt(2.0 / n))


def test_theorem1_of_a_ddpm_chain_gives_the_schedule_marginals():
    """A GGDM initialised from DDPM has the schedule's marginals (a = alpha, v = sigma^2)."""
    sched = schedules.linear_beta(1000)
    layer = samplers.create("ggdm", gauss.denoiser(sched), num_steps=8, stride="quadratic")
    c = layer.coefficients()
    t = layer.query_times()
    np.testing.assert_allclose(c["marginal_a"], sched.alpha(t), rtol=1e-4)
    np.testing.assert_allclose(c["marginal_v"], sched.sigma(t) ** 2, rtol=1e-4)
