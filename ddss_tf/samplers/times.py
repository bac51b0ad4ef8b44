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
  edm                           Karras et al. 2022 (eq. 5), rho = 7, in the variance-
                                exploding noise level sigma_ve = sigma / alpha =
                                exp(-lambda / 2): sigma_ve_i = (s_max^(1/rho) + i / (K - 1)
                                (s_min^(1/rho) - s_max^(1/rho)))^rho from s_max =
                                sigma_ve(T - 1) down to s_min = sigma_ve(0), mapped back to
                                model time through lambda = -2 log sigma_ve
                                (`schedule.t_from_log_snr`); k-diffusion's get_sigmas_karras
These grids put the first query at T - 1 and the last at 0 for every K, as
DPM-Solver does with its end point t = 0 queried once more for x0_hat.

Rectified-flow grids (a `schedules.RectifiedFlow` only: they are made in its flow time u,
then shifted by the schedule, s = k u / (1 + (k - 1) u), and mapped to model time
t = (T + 1) u - 1; u = 1, pure noise, is taken at the schedule's noisiest time T - 1):
  flow_euler                    FlowMatchEulerDiscreteScheduler's (diffusers) and KerasHub's
                                SD3 grid: u_i = linspace(1, shift(1 / T), K) (its last
                                point shifted twice, as both compute it); Euler on it is
                                DDIM(eta = 0)
  flow_sigmas                   DPMSolverMultistepScheduler's and UniPCMultistepScheduler's
                                use_flow_sigmas grid: u_i = (1 - 1 / T) (K - i) / K,
                                i = 0 .. K - 1 (their last step goes to data)

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

__all__ = ["stride_names", "initial_times", "flow_grid", "edm_sigmas", "learned_times", "learned_times_inverse",
           "Marginals", "marginals", "check_num_steps"]

_CONTINUOUS = ("edm", "logsnr_uniform", "time_uniform")  # real-valued, from T - 1 down to 0
_FLOW = ("flow_euler", "flow_sigmas")  # real-valued, on rectified-flow schedules only
EDM_RHO = 7.0  # Karras et al. 2022's rho

Marginals = collections.namedtuple("Marginals", ["alpha", "sigma", "log_snr"])
Marginals.__doc__ = """Schedule values at the K query times, visiting order.

alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar), log_snr = log(alpha^2 / sigma^2);
each [K], float64 numpy or a tensor."""


def stride_names(schedule=None):
    """Every stride name a sampler accepts; given a schedule, those that apply to it (the
    rectified-flow grids need a rectified-flow schedule)."""
    names = tuple(schedules.stride_names()) + _CONTINUOUS
    if schedule is None or schedules.is_flow(schedule):
        names += _FLOW
    return sorted(names)


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
        raise ValueError(f"unknown stride {kind!r}; accepted: "
                         f"{', '.join(stride_names(schedule))}")
    last = schedule.num_timesteps - 1
    check_num_steps(num_steps, schedule.num_timesteps)
    if kind in _FLOW:
        return flow_grid(schedule, kind, num_steps)
    if kind not in _CONTINUOUS:
        steps = schedules.stride(kind, schedule.num_timesteps, num_steps)
        return steps[::-1].astype(np.float64)
    if num_steps == 1:
        return np.array([float(last)])
    if kind == "time_uniform":
        return np.linspace(float(last), 0.0, num_steps)
    lam_max, lam_min = schedule.log_snr(0.0), schedule.log_snr(float(last))
    if kind == "logsnr_uniform":
        lam = np.linspace(lam_min, lam_max, num_steps)
    else:
        lam = -2.0 * np.log(edm_sigmas(np.exp(-0.5 * lam_max), np.exp(-0.5 * lam_min), num_steps))
    times = np.asarray(schedule.t_from_log_snr(lam), np.float64)
    times[0], times[-1] = last, 0.0
    return times


def flow_grid(schedule, kind, num_steps):
    """The K query times of a rectified-flow grid (module doc), descending, float64 [K]."""
    if not schedules.is_flow(schedule):
        raise ValueError(f"the {kind} stride is a rectified-flow grid: it needs a rectified_flow "
                         f"schedule, not {schedule.get_config().get('kind')}; accepted here: "
                         f"{', '.join(stride_names(schedule))}")
    t = schedule.num_timesteps
    if kind == "flow_euler":
        u = np.linspace(1.0, schedule.shifted(1.0 / t), num_steps)
    else:
        u = (1.0 - 1.0 / t) * np.arange(num_steps, 0, -1) / num_steps
    times = np.asarray(schedule.t_from_flow_time(u), np.float64)
    if np.any(np.diff(times) >= 0):
        raise ValueError(f"the {kind} grid repeats query times at num_steps={num_steps} with "
                         f"T={t} (its ends are clipped to [0, T - 1]); use fewer steps")
    return times


def edm_sigmas(sigma_min, sigma_max, num_steps, rho=EDM_RHO):
    """Karras et al. 2022, eq. 5: K noise levels from sigma_max down to sigma_min, float64 [K]."""
    ramp = np.linspace(0.0, 1.0, num_steps)
    inv_max, inv_min = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (inv_max + ramp * (inv_min - inv_max)) ** rho


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
