"""UniPC, B(h) = e^h - 1 ("bh2"), order 2, data prediction (Zhao et al. 2023).

With l = log(alpha / sigma), h_i = l_{i+1} - l_i, hh = -h_i, data predictions m_i,
B(h) = expm1(hh), phi_1 = expm1(hh), and from t = tau_i to s = tau_{i+1}:

  predictor UniP (Zhao et al. Alg. 2; order p_i = 1 at i = 0, else 2):
    x_s = (sigma_s / sigma_t) x_t - alpha_s phi_1 m_i - alpha_s B(h) rho_p D_1,
    D_1 = (m_{i-1} - m_i) / r_i,  r_i = (l_{i-1} - l_i) / h_i,  rho_p = 1/2   (p = 2 only)
  corrector UniC (Alg. 1), once m_{i+1} = x0_hat(x_s, s) is known, same order p_i:
    x_s <- (sigma_s / sigma_t) x_t - alpha_s phi_1 m_i
           - alpha_s B(h) (rho_0 D_1 + rho_1 (m_{i+1} - m_i)),
    p = 1: rho_1 = 1/2;  p = 2: [[1, 1], [r_i, 1]] (rho_0, rho_1) = (b_1, b_2),
    b_1 = (phi_1 / hh - 1) / B(h),  b_2 = 2 ((phi_1 / hh - 1) / hh - 1/2) / B(h).
The corrector reuses m_{i+1} (no extra evaluation); the next predictor starts from
the corrected x_s. The last step goes to data (sigma = 0) at first order and returns
the last x0_hat, so the corrector is not applied there (it could not change the
output): K evaluations in all, as in the reference implementation with
lower_order_final. Same time grids and end-point convention as DPM-Solver++.

Coefficients [K] (index i = the transition from tau_i):
  predictor  x_{i+1} = pred_xt x_i + pred_x0 m_i + pred_x0_prev m_{i-1}
  corrector  x_{i+1} = pred_xt x_i + corr_x0 m_i + corr_x0_prev m_{i-1} + corr_x0_next m_{i+1}
"""

import tensorflow as tf

from ddss_tf.samplers import base, solver

__all__ = ["UniPC", "coefficients"]


def _corrector_weights(h, r):
    """(rho_0, rho_1) of the order-2 UniC step: solve [[1, 1], [r, 1]] rho = (b_1, b_2)."""
    hh = -h
    phi_1 = tf.math.expm1(hh)
    b_h = phi_1
    k1 = phi_1 / hh - 1.0
    b_1 = k1 / b_h
    b_2 = 2.0 * (k1 / hh - 0.5) / b_h
    rho_0 = (b_1 - b_2) / (1.0 - r)
    return rho_0, b_1 - rho_0


def coefficients(marg):
    """Predictor and corrector coefficients [K] from `times.Marginals` (see module doc)."""
    cur, nxt = base.transitions(marg)
    n = cur.alpha.shape[0]                                 # K - 1 transitions
    h = 0.5 * (nxt.log_snr - cur.log_snr)
    a_b = nxt.alpha * tf.math.expm1(-h)                    # alpha_s B(h) = alpha_s phi_1
    first = -a_b                                           # -alpha_s phi_1 (m_i term)
    r = -h[:-1] / h[1:]                                    # r_i for i >= 1
    rho_0, rho_1 = _corrector_weights(h[1:], r)
    zero = tf.zeros([1], h.dtype)

    def join(order1, order2):
        return tf.concat([order1[:1], order2], 0)[:n]

    pred_x0 = join(first, first[1:] + 0.5 * a_b[1:] / r)
    pred_x0_prev = join(zero, -0.5 * a_b[1:] / r)
    corr_x0 = join(first + 0.5 * a_b, first[1:] + a_b[1:] * (rho_0 / r + rho_1))
    corr_x0_prev = join(zero, -a_b[1:] * rho_0 / r)
    corr_x0_next = join(-0.5 * a_b, -a_b[1:] * rho_1)
    return {"pred_xt": base.with_final(nxt.sigma / cur.sigma, 0.0),
            "pred_x0": base.with_final(pred_x0, 1.0),
            "pred_x0_prev": base.with_final(pred_x0_prev, 0.0),
            "corr_x0": base.with_final(corr_x0, 0.0),
            "corr_x0_prev": base.with_final(corr_x0_prev, 0.0),
            "corr_x0_next": base.with_final(corr_x0_next, 0.0)}


class UniPC(solver.Solver):
    """UniPC-2 (bh2) predictor-corrector multistep solver (deterministic; ignores noise)."""

    family = "unipc"
    default_stride = "logsnr_uniform"
    flow_stride = "flow_sigmas"
    coefficients_fn = staticmethod(coefficients)

    def _correct(self, i, chain, coefs):
        """UniC: x_i from the corrected x_{i-1}, m_{i-1}, m_{i-2} and the new m_i."""
        if i == 0:
            return chain.xs[0]
        j = i - 1
        x = (coefs["pred_xt"][j] * chain.xs[j] + coefs["corr_x0"][j] * chain.x0s[j]
             + coefs["corr_x0_next"][j] * chain.x0s[i])
        if j > 0:
            x = x + coefs["corr_x0_prev"][j] * chain.x0s[j - 1]
        return x

    def _step(self, i, chain, z, coefs):
        """UniP: x_{i+1} from the corrected x_i and m_i, m_{i-1}."""
        x = coefs["pred_xt"][i] * chain.xs[i] + coefs["pred_x0"][i] * chain.x0s[i]
        if i > 0:
            x = x + coefs["pred_x0_prev"][i] * chain.x0s[i - 1]
        return x
