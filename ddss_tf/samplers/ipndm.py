"""iPNDM: improved pseudo numerical methods (Zhang & Chen 2023, "Fast sampling of diffusion
models with exponential integrator", section 4 and Appendix; Zhou et al. 2024's diff-sampler
and k-diffusion's `sample_ipndm`), on the noise prediction.

The probability-flow ODE in the variance-exploding variables y = x / alpha and
sigma_ve = sigma / alpha = exp(-lambda / 2) is dy / d sigma_ve = eps(x). iPNDM integrates
it with the explicit Adams-Bashforth formula of fixed (equal-step) coefficients on the
K query times (`times`, default the Karras et al. 2022 grid "edm"): from t = tau_i to
s = tau_{i+1}, with eps_j = eps_hat at tau_j,
    y_s = y_t + (sigma_ve_s - sigma_ve_t) sum_{j < p_i} c^(p_i)_j eps_{i-j},
    p_i = min(4, i + 1)   (lower orders at the first steps, `MAX_ORDER` = 4)
    c^(1) = (1),  c^(2) = (3, -1) / 2,  c^(3) = (23, -16, 5) / 12,
    c^(4) = (55, -59, 37, -9) / 24,
i.e. in the state x = alpha y:
    x_s = (alpha_s / alpha_t) x_t + alpha_s (sigma_ve_s - sigma_ve_t) sum_j c^(p_i)_j eps_{i-j}.
The last step goes to data (sigma_ve = 0) at first order: y_0 = y_t - sigma_ve_t eps_t
= x0_hat, so the K-th evaluation is at the last query time and the output is its x0_hat,
as k-diffusion's sample_ipndm does when its last sigma is 0 ("denoising step").

Coefficients [K]: x_s = coef_xt x_t + coef_eps eps_i + coef_eps_prev eps_{i-1}
+ coef_eps_prev2 eps_{i-2} + coef_eps_prev3 eps_{i-3}; the last entry is the step to data
(coef_xt = 1 / alpha_t, coef_eps = -sigma_ve_t), which the loop takes as x0_hat.
"""

import numpy as np
import tensorflow as tf

from ddss_tf.samplers import base, solver

__all__ = ["IPNDM", "coefficients", "step", "MAX_ORDER", "ADAMS_BASHFORTH"]

MAX_ORDER = 4
# ADAMS_BASHFORTH[p - 1][j]: weight of eps_{i-j} at order p (equal steps).
ADAMS_BASHFORTH = np.array([[1.0, 0.0, 0.0, 0.0],
                            [3.0 / 2, -1.0 / 2, 0.0, 0.0],
                            [23.0 / 12, -16.0 / 12, 5.0 / 12, 0.0],
                            [55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24]])
_EPS_KEYS = ("coef_eps", "coef_eps_prev", "coef_eps_prev2", "coef_eps_prev3")


def step(i, chain, z, coefs):
    """x_{i+1} = coef_xt[i] x_i + sum_j coef_eps..[i] eps_{i-j}, j < min(4, i + 1)."""
    x = coefs["coef_xt"][i] * chain.xs[i]
    for back, key in enumerate(_EPS_KEYS[:min(MAX_ORDER, i + 1)]):
        x = x + coefs[key][i] * chain.eps[i - back]
    return x


def coefficients(marg):
    """{"coef_xt", "coef_eps", "coef_eps_prev", "coef_eps_prev2", "coef_eps_prev3"} [K]
    from `times.Marginals` (see module doc)."""
    cur, nxt = base.transitions(marg)
    n = cur.alpha.shape[0]                                    # K - 1 transitions
    sigma_ve_t = cur.sigma / cur.alpha
    d_sigma_ve = nxt.sigma / nxt.alpha - sigma_ve_t           # < 0
    orders = np.minimum(np.arange(n), MAX_ORDER - 1)          # p_i - 1
    weights = tf.constant(ADAMS_BASHFORTH[orders].reshape([n, MAX_ORDER]), cur.alpha.dtype)
    scaled = (nxt.alpha * d_sigma_ve)[:, None] * weights      # [K - 1, 4]
    last_alpha, last_sigma = marg.alpha[-1], marg.sigma[-1]
    coefs = {"coef_xt": tf.concat([nxt.alpha / cur.alpha, [1.0 / last_alpha]], 0)}
    for j, key in enumerate(_EPS_KEYS):
        final = [-last_sigma / last_alpha] if j == 0 else tf.zeros([1], scaled.dtype)
        coefs[key] = tf.concat([scaled[:, j], final], 0)
    return coefs


class IPNDM(solver.Solver):
    """iPNDM, Adams-Bashforth up to fourth order on eps (deterministic; ignores noise)."""

    family = "ipndm"
    default_stride = "edm"
    flow_stride = "edm"
    coefficients_fn = staticmethod(coefficients)
    step_fn = staticmethod(step)
