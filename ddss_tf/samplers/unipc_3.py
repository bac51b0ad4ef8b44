"""UniPC-3: UniPC, B(h) = e^h - 1 ("bh2"), predictor and corrector of order 3, data
prediction (Zhao et al. 2023, Algorithms 1-2 and eq. 8-9; diffusers'
UniPCMultistepScheduler(solver_order=3)).

With l = log(alpha / sigma), h = l_{i+1} - l_i, hh = -h, data predictions m_i, the step
from t = tau_i to s = tau_{i+1} at order p_i = min(3, i + 1) reads the p_i - 1 earlier
predictions through
    r_k = (l_{i-k} - l_i) / h,  D1_k = (m_{i-k} - m_i) / r_k   (k = 1 .. p_i - 1),
and, with phi_1 = B(h) = expm1(hh), g_1 = phi_1 / hh - 1, g_{j+1} = g_j / hh - 1 / (j+1)!,
b_j = j! g_j / B(h):
  predictor UniP-p:  x_s = (sigma_s / sigma_t) x_t - alpha_s phi_1 m_i
                           - alpha_s B(h) sum_k rho^p_k D1_k,
    p = 2: rho^p = 1/2;  p = 3: [[1, 1], [r_1, r_2]] rho^p = (b_1, b_2);
  corrector UniC-p, once m_{i+1} = x0_hat(x_s, s) is known:
    x_s <- (sigma_s / sigma_t) x_t - alpha_s phi_1 m_i
           - alpha_s B(h) (sum_k rho^c_k D1_k + rho^c_p (m_{i+1} - m_i)),
    p = 1: rho^c = 1/2;  else rho^c solves R rho^c = (b_1 .. b_p), R_{jk} = r_k^(j-1) with
    r_p = 1 (the p x p Vandermonde system of the paper's Algorithm 1).
Orders 1 and 2 (steps 0 and 1) are those of `unipc` (UniPC-2), whose module documents
the conventions kept here: the corrector reuses m_{i+1} (no extra evaluation), the last
step goes to data at first order and returns the last x0_hat, uncorrected, K evaluations
in all. The step into the last query time stays third order (diffusers' lower_order_final,
whose order is min(3, K - i), lowers it to 2).

Coefficients [K] as `unipc`'s plus pred_x0_prev2 and corr_x0_prev2, the weights of
m_{i-2}. In float32 (+TIME) g_3 loses about log10(1 / h^3) digits to cancellation: ~1e-5
relative at h = 0.1, i.e. K ~ 100 on a linear-beta schedule.
"""

import tensorflow as tf

from ddss_tf.samplers import base
from ddss_tf.samplers import unipc

__all__ = ["UniPC3", "coefficients"]


def _weights(h, h_prev, h_prev2):
    """b_1..b_3 and r_1, r_2 of the order-3 steps, each [n]."""
    hh = -h
    phi_1 = tf.math.expm1(hh)
    g_1 = phi_1 / hh - 1.0
    g_2 = g_1 / hh - 0.5
    g_3 = g_2 / hh - 1.0 / 6.0
    b = (g_1 / phi_1, 2.0 * g_2 / phi_1, 6.0 * g_3 / phi_1)
    r_1 = -h_prev / h
    return b, r_1, -(h_prev + h_prev2) / h


def _third_order(a_b, h, h_prev, h_prev2):
    """Order-3 predictor and corrector weights of m_{i+1}, m_i, m_{i-1}, m_{i-2}, each [n]."""
    (b_1, b_2, b_3), r_1, r_2 = _weights(h, h_prev, h_prev2)
    rp_1 = (b_2 - r_2 * b_1) / (r_1 - r_2)                  # [[1, 1], [r_1, r_2]] rho = b
    rp_2 = b_1 - rp_1
    ones = tf.ones_like(r_1)
    vandermonde = tf.stack([tf.stack([ones, ones, ones], -1), tf.stack([r_1, r_2, ones], -1),
                            tf.stack([r_1 * r_1, r_2 * r_2, ones], -1)], 1)      # [n, 3, 3]
    rc = tf.linalg.solve(vandermonde, tf.stack([b_1, b_2, b_3], -1)[..., None])[..., 0]
    rc_1, rc_2, rc_3 = rc[:, 0], rc[:, 1], rc[:, 2]
    pred = {"x0": -a_b + a_b * (rp_1 / r_1 + rp_2 / r_2),
            "x0_prev": -a_b * rp_1 / r_1, "x0_prev2": -a_b * rp_2 / r_2}
    corr = {"x0": -a_b + a_b * (rc_1 / r_1 + rc_2 / r_2 + rc_3),
            "x0_prev": -a_b * rc_1 / r_1, "x0_prev2": -a_b * rc_2 / r_2, "x0_next": -a_b * rc_3}
    return pred, corr


def coefficients(marg):
    """`unipc.coefficients` keys plus pred_x0_prev2, corr_x0_prev2 [K] (see module doc)."""
    second = unipc.coefficients(marg)                       # orders 1 and 2, the final step
    cur, nxt = base.transitions(marg)
    n = cur.alpha.shape[0]                                  # K - 1 transitions
    zeros = tf.zeros_like(second["pred_x0"])
    if n < 3:
        return dict(second, pred_x0_prev2=zeros, corr_x0_prev2=zeros)
    h = 0.5 * (nxt.log_snr - cur.log_snr)
    a_b = nxt.alpha[2:] * tf.math.expm1(-h[2:])             # alpha_s B(h)
    pred, corr = _third_order(a_b, h[2:], h[1:-1], h[:-2])

    def join(name, order3):
        lower = second.get(name, zeros)                     # orders 1, 2 and the final step
        return tf.concat([lower[:2], order3, lower[-1:]], 0)

    coefs = {f"pred_{k}": join(f"pred_{k}", v) for k, v in pred.items()}
    coefs.update({f"corr_{k}": join(f"corr_{k}", v) for k, v in corr.items()})
    return dict(coefs, pred_xt=second["pred_xt"])


class UniPC3(unipc.UniPC):
    """UniPC-3 (bh2) predictor-corrector multistep solver (deterministic; ignores noise)."""

    family = "unipc_3"
    coefficients_fn = staticmethod(coefficients)

    def _correct(self, i, chain, coefs):
        """UniC: `unipc`'s corrector plus corr_x0_prev2[i-1] m_{i-3}."""
        x = super()._correct(i, chain, coefs)
        if i > 2:
            x = x + coefs["corr_x0_prev2"][i - 1] * chain.x0s[i - 3]
        return x

    def _step(self, i, chain, z, coefs):
        """UniP: `unipc`'s predictor plus pred_x0_prev2[i] m_{i-2}."""
        x = super()._step(i, chain, z, coefs)
        if i > 1:
            x = x + coefs["pred_x0_prev2"][i] * chain.x0s[i - 2]
        return x
