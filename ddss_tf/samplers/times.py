"""Query times of a K-step sampler, the +TIME parametrisation, and the marginals there.

A K-step sampler visits query times tau_K > ... > tau_1 (model time units, real
valued) and its last step returns x0_hat (docs/design.md, "Notation"). Everything in
`samplers` indexes steps in *visiting order*: index i = 0 is the noisiest query
time tau_K, index K - 1 is tau_1; arrays of per-step values have K entries.

Initial query times ("strides"):
  linear, quadratic, trailing   the integer strides of `schedules.stride` (the DDIM
                                reference code; trailing ends at T - 1)
  time_uniform                  K points evenly spaced in t from T - 1 down to 0
  logsnr_uniform                K points evenly spaced in log-SNR from lambda(T - 1)
                                up to lambda(0) (DPM-Solver's "logSNR" steps)
The two uniform grids put the first query at T - 1 and the last at 0 for every K,
as DPM-Solver does with its end point t = 0 queried once more for x0_hat.

+TIME (Watson et al. 2022, section 3): the K query times are learned as
    tau (ascending) = (T - 1) * cumsum(softmax([w; 1]))[:K]
with K logits w (`constraints.increasing`): the appended logit gives a free last
gap, so neither end is pinned and the times stay strictly inside (0, T - 1) and
strictly increasing. A stride's query at t = 0 or T - 1 is initialised
`constraints.BOUNDARY` * (T - 1) away from the end (1e-6 model time units at T =
1000).
"""

import collections

import numpy as np
import tensorflow as tf

from ddss_tf import schedules
from ddss_tf.samplers import constraints

__all__ = ["stride_names", "initial_times", "learned_times", "learned_times_inverse",
           "Marginals", "marginals", "check_num_steps"]

_UNIFORM = ("logsnr_uniform", "time_uniform")

Marginals = collections.namedtuple("Marginals", ["alpha", "sigma", "log_snr"])
Marginals.__doc__ = """Schedule values at the K query times, visiting order.

alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar), log_snr = log(alpha^2 / sigma^2);
each [K], float64 numpy or a tensor."""


def stride_names():
    """Every stride name a sampler accepts."""
    return sorted(tuple(schedules.stride_names()) + _UNIFORM)


def check_num_steps(num_steps, num_timesteps):
    """ValueError unless num_steps is an integer in [1, T]."""
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or not (
            1 <= num_steps <= num_timesteps):
        raise ValueError(
            f"num_steps must be an integer in [1, {num_timesteps}] (the model's T), "
            f"got {num_steps!r}")


def initial_times(schedule, kind, num_steps):
    """The K query times of a stride, descending, float64 numpy [K]."""
    if kind not in stride_names():
        raise ValueError(f"unknown stride {kind!r}; accepted: {', '.join(stride_names())}")
    last = schedule.num_timesteps - 1
    check_num_steps(num_steps, schedule.num_timesteps)
    if kind not in _UNIFORM:
        steps = schedules.stride(kind, schedule.num_timesteps, num_steps)
        return steps[::-1].astype(np.float64)
    if num_steps == 1:
        return np.array([float(last)])
    if kind == "time_uniform":
        return np.linspace(float(last), 0.0, num_steps)
    lam = np.linspace(schedule.log_snr(float(last)), schedule.log_snr(0.0), num_steps)
    times = np.asarray(schedule.t_from_log_snr(lam), np.float64)
    times[0], times[-1] = last, 0.0
    return times


def learned_times(logits, num_timesteps):
    """+TIME: (T - 1) * cumsum(softmax([w; 1]))[:K], returned descending [K]."""
    fractions = constraints.increasing(logits)[0]
    return tf.reverse(fractions * float(num_timesteps - 1), [0])


def learned_times_inverse(times, num_timesteps):
    """Logits w [K] (float64 numpy) with learned_times(w) == times (descending)."""
    ascending = np.asarray(times, np.float64)[::-1] / float(num_timesteps - 1)
    return constraints.increasing_inverse(ascending)


def marginals(schedule, times, dtype=tf.float32):
    """`Marginals` at the query times.

    times: float64 numpy [K] (answered exactly in float64, then cast to `dtype`
    constants) or a float tensor [K] (answered in-graph, differentiable in t).
    """
    if tf.is_tensor(times):
        return Marginals(schedule.alpha(times), schedule.sigma(times), schedule.log_snr(times))
    times = np.asarray(times, np.float64)
    values = (schedule.alpha(times), schedule.sigma(times), schedule.log_snr(times))
    return Marginals(*(tf.constant(np.asarray(v, np.float64), dtype) for v in values))
