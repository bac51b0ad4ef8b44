"""Gaussian data N(m, s^2 I): the exact denoiser and probability-flow map (test helper).

For x_t = alpha_t x_0 + sigma_t eps with x_0 ~ N(m, s^2 I), the marginal is
N(alpha_t m, V_t I) with V_t = alpha_t^2 s^2 + sigma_t^2, and
  E[eps | x_t] = sigma_t (x_t - alpha_t m) / V_t,
  E[x_0 | x_t] = m + alpha_t s^2 (x_t - alpha_t m) / V_t.
The probability-flow ODE keeps (x_t - alpha_t m) / sqrt(V_t) constant, so it maps
x_t to x_u = alpha_u m + sqrt(V_u / V_t) (x_t - alpha_t m).
"""

import numpy as np

from ddss_tf import denoisers

M, S = 0.3, 0.5


def denoiser(schedule, m=M, s=S, clip_x0=False):
    """Canonical denoiser with the exact eps of N(m, s^2 I) data (float32 tf)."""

    def eps_fn(x_t, t):
        alpha = denoisers.append_dims(schedule.alpha(t), x_t)
        sigma = denoisers.append_dims(schedule.sigma(t), x_t)
        return sigma * (x_t - alpha * m) / (alpha * alpha * s * s + sigma * sigma)

    return denoisers.from_eps_fn(eps_fn, schedule, clip_x0=clip_x0)


def eps(alpha, sigma, x, m=M, s=S):
    """E[eps | x_t], float64 numpy."""
    return sigma * (x - alpha * m) / (alpha ** 2 * s ** 2 + sigma ** 2)


def flow(schedule, x, t_from, t_to, m=M, s=S):
    """The exact probability-flow map from time t_from to t_to, float64 numpy."""
    a_t, s_t = schedule.alpha(t_from), schedule.sigma(t_from)
    a_u, s_u = schedule.alpha(t_to), schedule.sigma(t_to)
    v_t, v_u = a_t ** 2 * s ** 2 + s_t ** 2, a_u ** 2 * s ** 2 + s_u ** 2
    return a_u * m + np.sqrt(v_u / v_t) * (np.asarray(x, np.float64) - a_t * m)


def x0_mean(schedule, x, t, m=M, s=S):
    """E[x_0 | x_t], float64 numpy."""
    a, sg = schedule.alpha(t), schedule.sigma(t)
    return m + a * s ** 2 * (np.asarray(x, np.float64) - a * m) / (a ** 2 * s ** 2 + sg ** 2)


def exact_sample(schedule, x_T, query_times, m=M, s=S):
    """What a K-step ODE sampler converges to: flow from tau_K to tau_1, then x0_hat there."""
    x = flow(schedule, x_T, query_times[0], query_times[-1], m, s)
    return x0_mean(schedule, x, query_times[-1], m, s)
