"""DDPM: ancestral sampling, respaced to K steps (Ho et al. 2020; Nichol & Dhariwal 2021).

From t = tau_i to s = tau_{i+1}, with beta' = 1 - alpha_bar_t / alpha_bar_s (Nichol &
Dhariwal's respacing), the posterior q(x_s | x_t, x_0) of Ho et al. eq. 6-7 is

    x_s = sqrt(alpha_bar_s) beta' / (1 - alpha_bar_t) x0_hat
          + sqrt(1 - beta') (1 - alpha_bar_s) / (1 - alpha_bar_t) x_t  +  std z,
    std^2 = beta_tilde = (1 - alpha_bar_s) / (1 - alpha_bar_t) beta'   (variance="small")
         or beta'                                                       (variance="large"),

and the last step returns x0_hat (the posterior mean when s is data; no noise).

Written with alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar), lambda = log-SNR
and e = beta' / sigma_t^2 = -expm1(lambda_t - lambda_s) (exact, no cancellation):
    coef_x0 = alpha_s e,   coef_xt = (alpha_t / alpha_s) sigma_s^2 / sigma_t^2,
    beta_tilde = sigma_s^2 e,   beta' = sigma_t^2 e.
"""

import tensorflow as tf

from ddss_tf.samplers import base

__all__ = ["DDPM", "transition", "schedule_ratio", "step", "VARIANCES"]

VARIANCES = ("small", "large")


def schedule_ratio(cur, nxt):
    """e = beta' / (1 - alpha_bar_t) = -expm1(lambda_t - lambda_s) for schedule marginals."""
    return -tf.math.expm1(cur.log_snr - nxt.log_snr)


def transition(alpha_t, sigma_t, alpha_s, sigma_s, e):
    """DDPM posterior between marginals (alpha_t, sigma_t) and (alpha_s, sigma_s), s < t.

    e = beta' / sigma_t^2 in (0, 1). Arrays or tensors [K-1].
    Returns (coef_x0, coef_xt, beta_tilde, beta').
    """
    ratio = sigma_s / sigma_t
    coef_x0 = alpha_s * e
    coef_xt = (alpha_t / alpha_s) * ratio * ratio
    return coef_x0, coef_xt, sigma_s * sigma_s * e, sigma_t * sigma_t * e


def posterior_coefficients(cur, nxt, variance="small"):
    """{"coef_x0", "coef_xt", "std"} [K] on the schedule's marginals (final step appended)."""
    coef_x0, coef_xt, small, large = transition(
        cur.alpha, cur.sigma, nxt.alpha, nxt.sigma, schedule_ratio(cur, nxt))
    var = small if variance == "small" else large
    return {"coef_x0": base.with_final(coef_x0, 1.0),
            "coef_xt": base.with_final(coef_xt, 0.0),
            "std": base.with_final(tf.sqrt(var), 0.0)}


def step(i, chain, z, coefs):
    """x_{i+1} = coef_x0[i] x0_hat_i + coef_xt[i] x_i + std[i] z  (Ho et al. eq. 6-7)."""
    x = coefs["coef_x0"][i] * chain.x0s[i] + coefs["coef_xt"][i] * chain.xs[i]
    if z is not None:
        x = x + coefs["std"][i] * z
    return x


class DDPM(base.Sampler):
    """Respaced ancestral DDPM sampler; variance "small" (beta_tilde) or "large" (beta')."""

    family = "ddpm"

    def __init__(self, denoiser, num_steps=10, stride=None, variance="small", **kwargs):
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance {variance!r}; accepted: {', '.join(VARIANCES)}")
        self.variance = variance
        super().__init__(denoiser, num_steps, stride, **kwargs)

    def _family_config(self):
        return {"variance": self.variance}

    def _coefficients_from_marginals(self, marg):
        return posterior_coefficients(*base.transitions(marg), self.variance)

    def _step(self, i, chain, z, coefs):
        return step(i, chain, z, coefs)
