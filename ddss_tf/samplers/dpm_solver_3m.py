"""DPM-Solver++(3M): multistep third-order DPM-Solver++ with data prediction (Lu et al.
2022, "DPM-Solver++", section 5 and the multistep third-order update of its reference
code; diffusers' DPMSolverMultistepScheduler(solver_order=3, algorithm_type="dpmsolver++")).

With l = log(alpha / sigma), data predictions m_i = x0_hat at tau_i and, for the step
from t = tau_i to s = tau_{i+1},
    h = l_{i+1} - l_i,  h_0 = l_i - l_{i-1},  h_1 = l_{i-1} - l_{i-2},
    r_0 = h_0 / h,  r_1 = h_1 / h,
    D1_0 = (m_i - m_{i-1}) / r_0,  D1_1 = (m_{i-1} - m_{i-2}) / r_1,
    D1 = D1_0 + r_0 / (r_0 + r_1) (D1_0 - D1_1),  D2 = (D1_0 - D1_1) / (r_0 + r_1),
    x_s = (sigma_s / sigma_t) x_t - alpha_s phi_1 m_i + alpha_s phi_2 D1 - alpha_s phi_3 D2,
    phi_1 = e^{-h} - 1,  phi_2 = phi_1 / h + 1,  phi_3 = (phi_1 + h) / h^2 - 1/2.
Orders: first at step 0 (DDIM), second at step 1 (the DPM-Solver++(2M) update of
`dpm_solver`, r = r_0), third from step 2 on. The last step goes to data at first order
and returns m_{K-1}, the last x0_hat (same end-point convention as `dpm_solver`); the
step into the last query time stays third order (diffusers' lower_order_final also
lowers that one, to second order, below 15 steps). This is the published rule, which
diffusers runs: its D2 estimates h^2 x0''(l) / 2 where the Taylor term phi_3 multiplies
needs h^2 x0'', and on Gaussian data it converges at order 2 (docs/solvers.md).

Coefficients [K]: x_s = coef_xt x_t + coef_x0 m_i + coef_x0_prev m_{i-1}
+ coef_x0_prev2 m_{i-2}. With E = (phi_2 r_0 - phi_3) / (r_0 + r_1) the third-order step
weighs m_i, m_{i-1}, m_{i-2} by alpha_s times
    -phi_1 + (phi_2 + E) / r_0,   -phi_2 / r_0 - E (1 / r_0 + 1 / r_1),   E / r_1.
"""

import tensorflow as tf

from ddss_tf.samplers import base, solver
from ddss_tf.samplers import dpm_solver

__all__ = ["DPMSolverPP3M", "coefficients", "step"]


def step(i, chain, z, coefs):
    """x_{i+1} = coef_xt[i] x_i + coef_x0[i] m_i + coef_x0_prev[i] m_{i-1}
    + coef_x0_prev2[i] m_{i-2}."""
    x = dpm_solver.step(i, chain, z, coefs)
    if i > 1:
        x = x + coefs["coef_x0_prev2"][i] * chain.x0s[i - 2]
    return x


def _third_order(h, h_0, h_1):
    """Weights of (m_i, m_{i-1}, m_{i-2}) per unit alpha_s, each [n], at steps i >= 2."""
    phi_1 = tf.math.expm1(-h)
    phi_2 = phi_1 / h + 1.0
    phi_3 = (phi_1 + h) / tf.square(h) - 0.5
    r_0, r_1 = h_0 / h, h_1 / h
    e = (phi_2 * r_0 - phi_3) / (r_0 + r_1)
    return (-phi_1 + (phi_2 + e) / r_0, -phi_2 / r_0 - e * (1.0 / r_0 + 1.0 / r_1), e / r_1)


def coefficients(marg):
    """{"coef_xt", "coef_x0", "coef_x0_prev", "coef_x0_prev2"} [K] from `times.Marginals`."""
    second = dpm_solver.coefficients(marg)                  # orders 1 and 2, the final step
    cur, nxt = base.transitions(marg)
    n = cur.alpha.shape[0]                                  # K - 1 transitions
    if n < 3:
        return dict(second, coef_x0_prev2=tf.zeros_like(second["coef_x0"]))
    h = 0.5 * (nxt.log_snr - cur.log_snr)                   # [K-1], > 0
    third = [nxt.alpha[2:] * w for w in _third_order(h[2:], h[1:-1], h[:-2])]

    def join(first_two, order3, final):
        return tf.concat([first_two, order3, tf.constant([final], h.dtype)], 0)

    return {"coef_xt": second["coef_xt"],
            "coef_x0": join(second["coef_x0"][:2], third[0], 1.0),
            "coef_x0_prev": join(second["coef_x0_prev"][:2], third[1], 0.0),
            "coef_x0_prev2": join(tf.zeros([2], h.dtype), third[2], 0.0)}


class DPMSolverPP3M(solver.Solver):
    """Multistep third-order DPM-Solver++ (deterministic; ignores noise)."""

    family = "dpm_solver_pp_3m"
    default_stride = "logsnr_uniform"
    flow_stride = "flow_sigmas"
    coefficients_fn = staticmethod(coefficients)
    step_fn = staticmethod(step)
