"""VARS: DDPM with learned marginal variances (Watson et al. 2022, section 3, "VARS").

The marginal variances 1 - alpha_bar at the K query times are learned as
    v (ascending in t) = cumsum(softmax([w; 1]))[:K]        (`constraints.increasing`)
so they stay increasing in t and inside (0, 1); K logits `variance_logits`. The
sampler uses these marginals *instead of* the schedule's 1 - alpha_bar everywhere
the DDPM sampler uses them (the network is still queried at the query times):

    x0_hat_i = (x_i - sqrt(v_i) eps_hat_i) / sqrt(1 - v_i)
    x_s = sqrt(alpha_bar_s) beta' / v_t x0_hat + sqrt(1 - beta') v_s / v_t x_t + std z,
    beta' = 1 - alpha_bar_t / alpha_bar_s,  std^2 = v_s / v_t beta'   (Ho et al. eq. 7)

with alpha_bar = 1 - v; the last step returns x0_hat. The mean is not adjusted to keep
the schedule's marginals (as in the paper). alpha_bar is the reverse cumulative sum
of the softmax gaps and alpha_bar_s - alpha_bar_t is one gap, so nothing cancels.

init="ddpm" only: the DDPM posterior always has noise, so DDIM(eta=0) is not a member
of this family.
"""

import numpy as np
import tensorflow as tf

from ddss_tf.samplers import base
from ddss_tf.samplers import constraints
from ddss_tf.samplers import ddpm
from ddss_tf.samplers import learnable

__all__ = ["VARS"]


class VARS(learnable.LearnableSampler):
    """DDPM posterior on learned, monotone marginal variances."""

    family = "vars"
    inits = ("ddpm",)

    def _build_family(self):
        variances = np.asarray(self.initial_marginals().sigma, np.float64) ** 2
        self.variance_logits = self.add_logits(
            "variance_logits", constraints.increasing_inverse(variances[::-1]))

    def _coefficients_from_marginals(self, marg):
        v, alpha_bar, gaps = constraints.increasing(self.variance_logits)
        var = tf.reverse(v, [0])                      # visiting order
        alpha_bar = tf.reverse(alpha_bar, [0])
        drop = tf.reverse(gaps[1:-1], [0])            # alpha_bar_s - alpha_bar_t, [K-1]
        alpha, sigma = tf.sqrt(alpha_bar), tf.sqrt(var)
        e = drop / (alpha_bar[1:] * var[:-1])         # beta' / v_t
        coef_x0, coef_xt, small, _ = ddpm.transition(alpha[:-1], sigma[:-1], alpha[1:], sigma[1:], e)
        return {"marginal_variance": var,
                "coef_x0": base.with_final(coef_x0, 1.0),
                "coef_xt": base.with_final(coef_xt, 0.0),
                "std": base.with_final(tf.sqrt(small), 0.0),
                "x0_coef_x": 1.0 / alpha,
                "x0_coef_eps": sigma / alpha}

    def _predict_x0(self, i, x, x0, eps, coefs):
        return self.clip_x0(coefs["x0_coef_x"][i] * x - coefs["x0_coef_eps"][i] * eps)

    def _step(self, i, chain, z, coefs):
        return ddpm.step(i, chain, z, coefs)
