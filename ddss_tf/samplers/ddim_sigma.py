"""DDIM-sigma: DDIM with learned per-step noise (Watson et al. 2022, section 3, "DDIM").

Only the posterior standard deviations are learned. From t = tau_i to s = tau_{i+1}:
    std_i = sqrt(1 - alpha_bar_s) sigmoid(v_i)
    x_s   = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - std_i^2) eps_hat + std_i z
(Song et al. eq. 12 with free sigmas; the factor sqrt(1 - alpha_bar_s) keeps the
eps coefficient real). With p = sigmoid(v): coef_eps = sigma_s sqrt((1 - p)(1 + p)),
1 - p = sigmoid(-v), so it is exact for p near 1. K - 1 variables `sigma_logits`
(the last step returns x0_hat).

init="ddpm": p = sqrt(e), e = -expm1(lambda_t - lambda_s) (DDIM eta=1 == DDPM with
beta_tilde); init="ddim": p = 0 (held `constraints.BOUNDARY` above it).
"""

import numpy as np
import tensorflow as tf

from ddss_tf.samplers import base
from ddss_tf.samplers import constraints
from ddss_tf.samplers import ddim
from ddss_tf.samplers import ddpm
from ddss_tf.samplers import learnable

__all__ = ["DDIMSigma"]


class DDIMSigma(learnable.LearnableSampler):
    """DDIM whose K - 1 noise levels are sigmoids of trainable logits."""

    family = "ddim_sigma"

    def _build_family(self):
        cur, nxt = base.transitions(self.initial_marginals())
        if self.init == "ddpm":
            p = np.sqrt(np.asarray(ddpm.schedule_ratio(cur, nxt), np.float64))
        else:
            p = np.zeros(self.num_steps - 1)
        self.sigma_logits = self.add_logits("sigma_logits", constraints.unit_interval_inverse(p))

    def _coefficients_from_marginals(self, marg):
        _, nxt = base.transitions(marg)
        p, one_minus_p = constraints.unit_interval(self.sigma_logits)
        std = nxt.sigma * p
        coef_eps = nxt.sigma * tf.sqrt(one_minus_p * (1.0 + p))
        coefs = ddim.eps_form(nxt, std, coef_eps)
        coefs["sigma_fraction"] = base.with_final(p, 0.0)
        return coefs

    def _step(self, i, chain, z, coefs):
        return ddim.step(i, chain, z, coefs)
