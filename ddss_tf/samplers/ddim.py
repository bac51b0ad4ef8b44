"""DDIM(eta) (Song et al. 2021, eq. 12 and 16).

From t = tau_i to s = tau_{i+1}:
    std   = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s)
    x_s   = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - std^2) eps_hat + std z
and the last step returns x0_hat. eta = 0 is deterministic (the probability-flow
ODE's first-order solver); eta = 1 equals DDPM with beta_tilde.

With alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) and
e = 1 - alpha_t^2 sigma_s^2 / (alpha_s^2 sigma_t^2) = -expm1(lambda_t - lambda_s):
    std = eta sigma_s sqrt(e),   coef_eps = sigma_s sqrt(1 - eta^2 e),   coef_x0 = alpha_s.
"""

import numpy as np
import tensorflow as tf

from ddss_tf.samplers import base
from ddss_tf.samplers import ddpm

__all__ = ["DDIM", "step", "x0_xt_form"]


def step(i, chain, z, coefs):
    """x_{i+1} = coef_x0[i] x0_hat_i + coef_eps[i] eps_hat_i + std[i] z  (Song et al. eq. 12)."""
    x = coefs["coef_x0"][i] * chain.x0s[i] + coefs["coef_eps"][i] * chain.eps[i]
    if z is not None:
        x = x + coefs["std"][i] * z
    return x


def eps_form(nxt, std, coef_eps):
    """{"coef_x0", "coef_eps", "std"} [K] from per-transition std and coef_eps [K-1]."""
    return {"coef_x0": base.with_final(nxt.alpha, 1.0),
            "coef_eps": base.with_final(coef_eps, 0.0),
            "std": base.with_final(std, 0.0)}


def x0_xt_form(cur, nxt):
    """DDIM(eta=0) as x_s = coef_x0 x0_hat + coef_xt x_t (eps_hat = (x_t - alpha_t x0_hat) / sigma_t):

    coef_x0 = alpha_s - sigma_s alpha_t / sigma_t = -alpha_s expm1((lambda_t - lambda_s) / 2),
    coef_xt = sigma_s / sigma_t. Per transition [K-1].
    """
    return -nxt.alpha * tf.math.expm1(0.5 * (cur.log_snr - nxt.log_snr)), nxt.sigma / cur.sigma


class DDIM(base.Sampler):
    """DDIM with a fixed eta >= 0 (eta > 1 only where the step stays valid)."""

    family = "ddim"

    def __init__(self, denoiser, num_steps=10, stride=None, eta=0.0, **kwargs):
        if isinstance(eta, bool) or not np.isfinite(float(eta)) or float(eta) < 0:
            raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
        self.eta = float(eta)
        super().__init__(denoiser, num_steps, stride, **kwargs)
        if self.eta > 1:
            self._check_large_eta()

    def _check_large_eta(self):
        if self.time:
            raise ValueError(
                "eta > 1 needs fixed query times (time=False); accepted with time=True: 0 <= eta <= 1")
        if not np.all(np.isfinite(self.coefficients()["coef_eps"])):
            raise ValueError(
                f"eta={self.eta} makes sqrt(1 - alpha_bar_s - std^2) imaginary on this stride; "
                "accepted: 0 <= eta <= 1, or a larger eta that keeps every step valid")

    @property
    def stochastic(self):
        return self.eta > 0

    def _family_config(self):
        return {"eta": self.eta}

    def _coefficients_from_marginals(self, marg):
        cur, nxt = base.transitions(marg)
        e = ddpm.schedule_ratio(cur, nxt)
        eta = tf.constant(self.eta, e.dtype)
        std = eta * nxt.sigma * tf.sqrt(e)
        coef_eps = nxt.sigma * tf.sqrt(1.0 - eta * eta * e)
        return eps_form(nxt, std, coef_eps)

    def _step(self, i, chain, z, coefs):
        return step(i, chain, z, coefs)
