"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), data prediction.

With l = log(alpha / sigma) (half the log-SNR), h_i = l_{i+1} - l_i and the data
predictions m_i = x0_hat at tau_i, the step from t = tau_i to s = tau_{i+1} is
    x_s = (sigma_s / sigma_t) x_t - alpha_s (e^{-h_i} - 1) D_i,
    D_0 = m_0                                              (first step: first order)
    D_i = (1 + 1 / (2 r_i)) m_i - 1 / (2 r_i) m_{i-1},  r_i = h_{i-1} / h_i   (i >= 1)
The last step goes to data (alpha = 1, sigma = 0, h = inf) at first order, which
returns m_{K-1} = x0_hat: the "lower-order final step". Unlike the reference code,
whose K evaluations end in x at t = 0 (sigma(0) > 0), the K-th evaluation here is at
the last query time and the output is its x0_hat (with the uniform grids of
`times`, the last query time is t = 0, as with the reference's denoise_to_zero).

Coefficients [K]: x_s = coef_xt x_t + coef_x0 m_i + coef_x0_prev m_{i-1}.
"""

import tensorflow as tf

from ddss_tf.samplers import base, solver

__all__ = ["DPMSolverPP2M", "step"]


def step(i, chain, z, coefs):
    """x_{i+1} = coef_xt[i] x_i + coef_x0[i] m_i + coef_x0_prev[i] m_{i-1}  (Lu et al. Alg. 2)."""
    x = coefs["coef_xt"][i] * chain.xs[i] + coefs["coef_x0"][i] * chain.x0s[i]
    if i > 0:
        x = x + coefs["coef_x0_prev"][i] * chain.x0s[i - 1]
    return x


def coefficients(marg):
    """{"coef_xt", "coef_x0", "coef_x0_prev"} [K] from `times.Marginals`."""
    cur, nxt = base.transitions(marg)
    h = 0.5 * (nxt.log_snr - cur.log_snr)                         # [K-1], > 0
    coef_d = -nxt.alpha * tf.math.expm1(-h)
    half_inv_r = 0.5 * h[1:] / h[:-1]                             # 1 / (2 r_i), i >= 1
    n = h.shape[0]                                                # K - 1 (0 when K = 1)
    w_cur = tf.concat([tf.ones([1], h.dtype), 1.0 + half_inv_r], 0)[:n]
    w_prev = tf.concat([tf.zeros([1], h.dtype), -half_inv_r], 0)[:n]
    return {"coef_xt": base.with_final(nxt.sigma / cur.sigma, 0.0),
            "coef_x0": base.with_final(coef_d * w_cur, 1.0),
            "coef_x0_prev": base.with_final(coef_d * w_prev, 0.0)}


class DPMSolverPP2M(solver.Solver):
    """Multistep second-order DPM-Solver++ (deterministic; ignores noise)."""

    family = "dpm_solver_pp_2m"
    default_stride = "logsnr_uniform"
    flow_stride = "flow_sigmas"
    coefficients_fn = staticmethod(coefficients)
    step_fn = staticmethod(step)
