"""Gaussian data N(m, S^2 I) on a rectified flow: the exact velocity network (test helper).

For the flow state x = (1 - s) x0 + s eps with x0 ~ N(m, S^2 I), x ~ N((1 - s) m, V I) with
V = (1 - s)^2 S^2 + s^2, and
  E[x0 | x] = m + (1 - s) S^2 (x - (1 - s) m) / V,   E[eps | x] = s (x - (1 - s) m) / V,
so the exact velocity is E[eps - x0 | x]. The probability-flow ODE keeps
(x - (1 - s) m) / sqrt(V) constant. Everything here is written in flow coordinates from the
closed form s = k u / (1 + (k - 1) u), u = (t + 1) / (T + 1) (the map of
`schedules.RectifiedFlow`, restated), never through the project's variance-preserving algebra,
so the tests compare that algebra with an independent derivation.
"""

import numpy as np
import tensorflow as tf

from ddss_tf import denoisers

M, S = 0.3, 0.5


def noise_level(t, num_timesteps, shift):
    """s at project time t, float64."""
    u = (np.asarray(t, np.float64) + 1.0) / (num_timesteps + 1.0)
    return shift * u / (1.0 + (shift - 1.0) * u)


def velocity(x, s, m=M, sd=S):
    """E[eps - x0 | x] at noise level s, float64 numpy (or float tensors)."""
    var = (1 - s) ** 2 * sd ** 2 + s ** 2
    centred = x - (1 - s) * m
    return s * centred / var - (m + (1 - s) * sd ** 2 * centred / var)


def network(time_scale, m=M, sd=S):
    """The exact velocity as a network fn(x_flow [B, ...] float32, t_net [B]) -> v: the time it
    is called with is time_scale * s."""

    def fn(x, t_net):
        s = denoisers.append_dims(tf.cast(t_net, x.dtype) / time_scale, x)
        return velocity(x, s, m, sd)

    return fn


def denoiser(schedule, m=M, sd=S, clip_x0=False):
    """A flow denoiser over the exact velocity network on `schedule` (a RectifiedFlow)."""
    return denoisers.from_fn(network(schedule.time_scale, m, sd), schedule, prediction="flow",
                             clip_x0=clip_x0)


def ode_map(x, s_from, s_to, m=M, sd=S):
    """The exact probability-flow map of a flow state from noise level s_from to s_to."""
    v_from = (1 - s_from) ** 2 * sd ** 2 + s_from ** 2
    v_to = (1 - s_to) ** 2 * sd ** 2 + s_to ** 2
    return (1 - s_to) * m + np.sqrt(v_to / v_from) * (np.asarray(x, np.float64) - (1 - s_from) * m)


def x0_mean(x, s, m=M, sd=S):
    """E[x0 | x] of a flow state, float64."""
    return np.asarray(x, np.float64) - s * velocity(np.asarray(x, np.float64), s, m, sd)


def exact_sample(x_T, query_times, num_timesteps, shift, m=M, sd=S):
    """What a K-step ODE sampler converges to: x_T (variance-preserving, at the first query
    time) as a flow state, carried by the exact flow to the last query time, then E[x0 | x]."""
    s = noise_level(np.asarray(query_times), num_timesteps, shift)
    x = np.asarray(x_T, np.float64) * np.sqrt((1 - s[0]) ** 2 + s[0] ** 2)
    return x0_mean(ode_map(x, s[0], s[-1], m, sd), s[-1], m, sd)
