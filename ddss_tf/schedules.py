"""Noise schedules: the one owner of the diffusion noise algebra.

Notation (Ho et al. 2020): model time t in {0, ..., T-1}, betas beta_t,
alpha_bar_t = prod_{s<=t} (1 - beta_s), and the forward marginal
x_t = alpha(t) x_0 + sigma(t) eps with alpha = sqrt(alpha_bar) and
sigma = sqrt(1 - alpha_bar).

Learned samplers query the model at *real-valued* t. A `Schedule` answers every
quantity for any real t in [0, T-1] by interpolating the log-SNR
lambda = log(alpha_bar / (1 - alpha_bar)) linearly between integer steps; at
integer t it equals the discrete table. All other quantities are derived from
lambda with numerically stable maps (alpha_bar = sigmoid(lambda)), so nothing
else in the package computes sqrt(1 - alpha_bar) by hand.

Every query accepts a numpy array / Python scalar (answered in float64 numpy)
or a tf.Tensor (answered in the tensor's dtype, differentiable in t).

`RectifiedFlow` (`rectified_flow`) is the same interface over a rectified-flow path
(flow matching: Liu et al. 2023; Esser et al. 2024, SD3), answered in closed form:
the flow state x = (1 - s) x0 + s eps is the variance-preserving state scaled by
c = sqrt((1 - s)^2 + s^2), with alpha = (1 - s) / c, sigma = s / c and
lambda = 2 log((1 - s) / s). Its class docstring has the time map.
"""

import collections
import math

import numpy as np
import tensorflow as tf

__all__ = [
        "Schedule",
        "RectifiedFlow",
        "linear_beta",
        "rectified_flow",
        "cosine",
        "from_config",
        "is_flow",
        "names",
        "same",
        "stride",
        "stride_names",
]


def _is_tensor(x):
    return isinstance(x, (tf.Tensor, tf.Variable)) or tf.is_tensor(x)


class Schedule:
    """A discrete noise schedule with continuous-time queries.

    Args:
        betas: float array [T], every entry in (0, 1).
        config: dict that `from_config` turns back into this schedule.
    """

    def __init__(self, betas, config):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.shape[0] < 2:
            raise ValueError(f"betas must be a 1-D array of length >= 2, got shape {betas.shape}")
        if not np.all((betas > 0) & (betas < 1)):
            raise ValueError("every beta must lie in the open interval (0, 1)")
        self._betas = betas
        self._alpha_bars = np.cumprod(1.0 - betas)
        self._log_snrs = np.log(self._alpha_bars) - np.log1p(-self._alpha_bars)
        self._config = dict(config)

    # ---- discrete tables (float64 numpy) ----
    @property
    def num_timesteps(self):
        """T, the number of discrete steps the model was trained on."""
        return int(self._betas.shape[0])

    @property
    def betas(self):
        return self._betas.copy()

    @property
    def alpha_bars(self):
        """alpha_bar_t for t = 0..T-1, float64 [T]."""
        return self._alpha_bars.copy()

    @property
    def log_snrs(self):
        """lambda_t for t = 0..T-1, float64 [T], strictly decreasing."""
        return self._log_snrs.copy()

    def get_config(self):
        return dict(self._config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items() if k != "kind")
        return f"schedules.{self._config.get('kind', 'Schedule')}({args})"

    # ---- continuous-time queries ----
    def log_snr(self, t):
        """lambda(t), linear between integer steps; t is clipped to [0, T-1]."""
        table = self._log_snrs
        last = self.num_timesteps - 1
        if _is_tensor(t):
            t = tf.convert_to_tensor(t)
            dtype = t.dtype if t.dtype.is_floating else tf.float32
            t = tf.clip_by_value(tf.cast(t, dtype), 0.0, float(last))
            i0 = tf.clip_by_value(tf.floor(t), 0.0, float(last - 1))
            frac = t - i0
            i0 = tf.cast(i0, tf.int32)
            lo = tf.gather(tf.constant(table, dtype), i0)
            hi = tf.gather(tf.constant(table, dtype), i0 + 1)
            return lo + frac * (hi - lo)
        t = np.clip(np.asarray(t, dtype=np.float64), 0.0, last)
        return np.interp(t, np.arange(self.num_timesteps, dtype=np.float64), table)

    def t_from_log_snr(self, lam):
        """Inverse of `log_snr`: the real t in [0, T-1] with log_snr(t) = lam (clipped)."""
        table = self._log_snrs
        last = self.num_timesteps - 1
        if _is_tensor(lam):
            lam = tf.convert_to_tensor(lam)
            dtype = lam.dtype if lam.dtype.is_floating else tf.float32
            lam = tf.cast(lam, dtype)
            neg = tf.constant(-table, dtype)  # ascending
            lam = tf.clip_by_value(lam, float(table[-1]), float(table[0]))
            flat = tf.reshape(-lam, [-1])
            idx = tf.searchsorted(neg, flat, side="right")
            i0 = tf.clip_by_value(idx - 1, 0, last - 1)
            lo = tf.gather(neg, i0)
            hi = tf.gather(neg, i0 + 1)
            t = tf.cast(i0, dtype) + (flat - lo) / (hi - lo)
            return tf.reshape(tf.clip_by_value(t, 0.0, float(last)), tf.shape(lam))
        lam = np.asarray(lam, dtype=np.float64)
        return np.interp(-lam, -table, np.arange(self.num_timesteps, dtype=np.float64))

    def alpha_bar(self, t):
        """alpha_bar(t) = sigmoid(lambda(t))."""
        lam = self.log_snr(t)
        return tf.sigmoid(lam) if _is_tensor(lam) else _np_sigmoid(lam)

    def alpha(self, t):
        """sqrt(alpha_bar(t)): the signal coefficient of x_t."""
        lam = self.log_snr(t)
        return tf.sqrt(tf.sigmoid(lam)) if _is_tensor(lam) else np.sqrt(_np_sigmoid(lam))

    def sigma(self, t):
        """sqrt(1 - alpha_bar(t)): the noise standard deviation of x_t."""
        lam = self.log_snr(t)
        return tf.sqrt(tf.sigmoid(-lam)) if _is_tensor(lam) else np.sqrt(_np_sigmoid(-lam))


def _np_sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def _backend(t):
    """(t as float64 numpy or a float tensor, the module answering it: np or tf's math ops)."""
    if _is_tensor(t):
        t = tf.convert_to_tensor(t)
        return tf.cast(t, t.dtype if t.dtype.is_floating else tf.float32), _TF
    return np.asarray(t, np.float64), _NP


_Ops = collections.namedtuple("_Ops", ["clip", "log", "sqrt", "sigmoid"])
_NP = _Ops(np.clip, np.log, np.sqrt, _np_sigmoid)
_TF = _Ops(tf.clip_by_value, tf.math.log, tf.sqrt, tf.sigmoid)


class RectifiedFlow(Schedule):
    """A rectified-flow path (flow matching) as a schedule, in closed form.

    Flow time u in (0, 1); the flow state x = (1 - s) x0 + s eps has noise level
    s = k u / (1 + (k - 1) u), SD3's time shift k (Esser et al. 2024, section 5.3.2; k = 1 is
    plain rectified flow, s = u). Project model time t in [0, T - 1] (what samplers query,
    +TIME learns and strides are made of) is

        u = (t + 1) / (T + 1):

    the T integer times are u = 1/(T+1) .. T/(T+1), evenly spaced strictly inside (0, 1), so
    the log-SNR is finite at both ends (2 log(T / k) at t = 0, -2 log(k T) at t = T - 1) and
    x0 = (x - sigma eps) / alpha stays defined at the noisiest time (GGDM's predictions need
    alpha > 0 there, as every variance-preserving schedule has). A grid point at pure noise
    (u = 1, FlowMatchEulerDiscreteScheduler's first) is taken at t = T - 1
    (`samplers.times`).

    In variance-preserving terms, with c = sqrt((1 - s)^2 + s^2) = 1 / (alpha + sigma):
        alpha = (1 - s) / c,   sigma = s / c,
        lambda = 2 log((1 - s) / s) = 2 (log(1 - u) - log(u) - log(k)),
    and back: u = sigmoid(-lambda / 2 - log(k)), t = (T + 1) u - 1; alpha and sigma come from
    lambda as for every schedule (alpha^2 = sigmoid(lambda)).

    A flow model's network ("flow" prediction, `denoisers`) takes the flow state c x_vp and
    `network_time(t)` = time_scale * s: s itself (time_scale 1) or the SD3 timestep of
    KerasHub and diffusers, s * 1000 (time_scale 1000).

    Args:
      num_timesteps: T >= 2, the number of integer project times.
      shift: k > 0.
      time_scale: > 0, the network's time per unit of s.
    """

    def __init__(self, num_timesteps=1000, shift=1.0, time_scale=1.0):
        _check_num_timesteps(num_timesteps)
        for name, value in (("shift", shift), ("time_scale", time_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        self._num_timesteps = int(num_timesteps)
        self._shift, self._time_scale = float(shift), float(time_scale)
        self._config = dict(kind="rectified_flow", num_timesteps=self._num_timesteps,
                            shift=self._shift, time_scale=self._time_scale)
        self._log_snrs = self.log_snr(np.arange(self._num_timesteps, dtype=np.float64))
        log_ab = -np.logaddexp(0.0, -self._log_snrs)
        self._alpha_bars = np.exp(log_ab)
        self._betas = -np.expm1(np.diff(log_ab, prepend=0.0))

    @property
    def num_timesteps(self):
        return self._num_timesteps

    @property
    def shift(self):
        return self._shift

    @property
    def time_scale(self):
        return self._time_scale

    def flow_time(self, t):
        """u = (t + 1) / (T + 1), the unshifted flow time; t is clipped to [0, T - 1]."""
        return self._flow_times(t)[0]

    def _flow_times(self, t):
        """(u, 1 - u, ops): 1 - u = (T - t) / (T + 1) without cancellation near u = 1."""
        t, ops = _backend(t)
        t = ops.clip(t, 0.0, self._num_timesteps - 1.0)
        n = self._num_timesteps + 1.0
        return (t + 1.0) / n, (self._num_timesteps - t) / n, ops

    def t_from_flow_time(self, u):
        """Inverse of `flow_time`: t = (T + 1) u - 1, clipped to [0, T - 1]."""
        u, ops = _backend(u)
        return ops.clip((self._num_timesteps + 1.0) * u - 1.0, 0.0, self._num_timesteps - 1.0)

    def shifted(self, u):
        """SD3's time shift of a flow time u in [0, 1]: k u / (1 + (k - 1) u)."""
        u, _ = _backend(u)
        return self._shift * u / (1.0 + (self._shift - 1.0) * u)

    def _noise_levels(self, t):
        """(s, 1 - s, ops), each computed without cancellation."""
        u, one_minus_u, ops = self._flow_times(t)
        denominator = 1.0 + (self._shift - 1.0) * u
        return self._shift * u / denominator, one_minus_u / denominator, ops

    def flow_sigma(self, t):
        """s, the noise level of the flow state (1 - s) x0 + s eps (diffusers' flow sigma)."""
        return self._noise_levels(t)[0]

    def flow_scale(self, t):
        """c = sqrt((1 - s)^2 + s^2): the flow state is c times the variance-preserving one."""
        s, one_minus_s, ops = self._noise_levels(t)
        return ops.sqrt(s * s + one_minus_s * one_minus_s)

    def network_time(self, t):
        """What the network is called with at project time t: time_scale * s."""
        return self._time_scale * self.flow_sigma(t)

    def t_from_flow_sigma(self, s):
        """Inverse of `flow_sigma`: t = (T + 1) u - 1 with u = s / (k - (k - 1) s), clipped to
        [0, T - 1]. s in [0, 1]."""
        s, _ = _backend(s)
        return self.t_from_flow_time(s / (self._shift - (self._shift - 1.0) * s))

    def log_snr(self, t):
        """lambda(t) = 2 (log(1 - u) - log(u) - log(k)) = 2 log((T - t) / (k (t + 1)))."""
        u, one_minus_u, ops = self._flow_times(t)
        return 2.0 * (ops.log(one_minus_u) - ops.log(u) - math.log(self._shift))

    def t_from_log_snr(self, lam):
        """Inverse of `log_snr`: t = (T + 1) sigmoid(-lambda / 2 - log(k)) - 1, clipped to
        [0, T - 1]."""
        lam, ops = _backend(lam)
        return self.t_from_flow_time(ops.sigmoid(-0.5 * lam - math.log(self._shift)))


# ---- constructors ----
def linear_beta(num_timesteps=1000, beta_start=1e-4, beta_end=0.02):
    """Ho et al.'s linear beta schedule (T=1000, 1e-4..0.02 by default)."""
    _check_num_timesteps(num_timesteps)
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
    return Schedule(betas, dict(kind="linear_beta", num_timesteps=int(num_timesteps),
                                                            beta_start=float(beta_start), beta_end=float(beta_end)))


def cosine(num_timesteps=1000, s=0.008, max_beta=0.999):
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) = f(t) / f(0),

    f(t) = cos(((t / T) + s) / (1 + s) * pi / 2)^2, betas clipped at max_beta.
    Step t of the table is the marginal after t + 1 forward steps.
    """
    _check_num_timesteps(num_timesteps)
    if not 0.0 < max_beta < 1.0 or s < 0:
        raise ValueError(f"need s >= 0 and 0 < max_beta < 1, got s={s}, max_beta={max_beta}")
    f = lambda u: math.cos((u / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2
    betas = [min(1.0 - f(i + 1) / f(i), max_beta) for i in range(num_timesteps)]
    return Schedule(np.array(betas), dict(kind="cosine", num_timesteps=int(num_timesteps),
                                                                                s=float(s), max_beta=float(max_beta)))


def rectified_flow(num_timesteps=1000, shift=1.0, time_scale=1.0):
    """A rectified-flow path with SD3's time shift (`RectifiedFlow`; shift 1: plain rectified
    flow; SD3 / SD3.5 use 3.0); the network takes time_scale * s (1000: KerasHub's and
    diffusers' SD3 timestep)."""
    return RectifiedFlow(num_timesteps, shift, time_scale)


_SCHEDULES = {"linear_beta": linear_beta, "cosine": cosine, "rectified_flow": rectified_flow}


def names():
    """Names accepted by `from_config` (the "kind" key)."""
    return sorted(_SCHEDULES)


def is_flow(schedule):
    """Whether `schedule` is a rectified-flow path (a `RectifiedFlow`)."""
    return isinstance(schedule, RectifiedFlow)


def same(a, b):
    """Whether two schedules answer the same: a rectified flow's config (its time convention
    included), a discrete schedule's T and betas (to 1e-9, as read back from JSON)."""
    if is_flow(a) or is_flow(b):
        return is_flow(a) and is_flow(b) and a.get_config() == b.get_config()
    return a.num_timesteps == b.num_timesteps and np.allclose(a.betas, b.betas, rtol=1e-9, atol=0)


def from_config(config):
    """Rebuild a schedule from `Schedule.get_config()` (e.g. read back from JSON)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in _SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; accepted: {', '.join(names())}")
    return _SCHEDULES[kind](**config)


# Discrete-time models use T <= 4000 (iDDPM); beyond a million steps a schedule's tables (and
# a T-step reference run) stop fitting in memory or time, so such a T is a typo.
MAX_TIMESTEPS = 1_000_000


def _check_num_timesteps(num_timesteps):
    if int(num_timesteps) != num_timesteps or not 2 <= num_timesteps <= MAX_TIMESTEPS:
        raise ValueError(f"num_timesteps must be an integer in [2, {MAX_TIMESTEPS}], got "
                         f"{num_timesteps!r}")


# ---- strides ----
def _linear_stride(num_timesteps, num_steps):
    # DDIM reference code: range(0, T, T // K); truncated to K entries when K does not divide T.
    return np.arange(0, num_timesteps, num_timesteps // num_steps)[:num_steps]


def _quadratic_stride(num_timesteps, num_steps):
    # DDIM reference code: int(linspace(0, sqrt(0.8 T), K) ** 2).
    seq = np.linspace(0, np.sqrt(num_timesteps * 0.8), num_steps) ** 2
    return np.array([int(s) for s in seq])


def _trailing_stride(num_timesteps, num_steps):
    # Evenly spaced with the first query at T - 1 (Lin et al. 2023, diffusers "trailing").
    return np.round(np.arange(num_timesteps, 0, -num_timesteps / num_steps)).astype(np.int64)[::-1] - 1


_STRIDES = {"linear": _linear_stride, "quadratic": _quadratic_stride, "trailing": _trailing_stride}


def stride_names():
    return sorted(_STRIDES)


def stride(kind, num_timesteps, num_steps):
    """The K model times a K-step sampler visits, as an ascending int64 array.

    kind: "linear" (range(0, T, T // K)), "quadratic" (int(linspace(0, sqrt(0.8 T), K)^2)),
    both as in the DDIM reference code, or "trailing" (evenly spaced, last entry T - 1).
    """
    if kind not in _STRIDES:
        raise ValueError(f"unknown stride {kind!r}; accepted: {', '.join(stride_names())}")
    if int(num_steps) != num_steps or not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be an integer in [1, {num_timesteps}], got {num_steps!r}")
    seq = np.asarray(_STRIDES[kind](int(num_timesteps), int(num_steps)), dtype=np.int64)
    if len(np.unique(seq)) != num_steps:
        raise ValueError(
                f"the {kind} stride repeats time steps at num_steps={num_steps} with T={num_timesteps}; "
                "use fewer steps or the linear / trailing stride")
    return seq
