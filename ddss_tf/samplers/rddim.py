"""Relaxed DDIM (RDDIM): a free Gaussian step per transition (Watson et al. 2022, section 3).

From t = tau_i to s = tau_{i+1}:
    q(x_s | x_t, x_0) = N(mu_i x0_hat + nu_i x_t, std_i^2 I),
    x_s = mu_i x0_hat + nu_i x_t + std_i z,
with mu_i and nu_i free real numbers (identity map: any value gives a valid Gaussian
step) and std_i = softplus(w_i) > 0; the last step returns x0_hat. Variables (K - 1
each): `mu`, `nu`, `std_logits`.

init="ddpm": the DDPM posterior (Ho et al. eq. 7, respaced); init="ddim": DDIM(eta=0)
written in x0_hat / x_t form, std = 0 (held `constraints.BOUNDARY` above it).
"""

from ddss_tf.samplers import base
from ddss_tf.samplers import constraints
from ddss_tf.samplers import ddpm
from ddss_tf.samplers import learnable

__all__ = ["RDDIM"]


class RDDIM(learnable.LearnableSampler):
    """Per-step free (mu, nu, std) Gaussian transitions."""

    family = "rddim"

    def _build_family(self):
        coef_x0, coef_xt, std = self.baseline_transitions()
        self.mu = self.add_logits("mu", coef_x0)
        self.nu = self.add_logits("nu", coef_xt)
        self.std_logits = self.add_logits("std_logits", constraints.positive_inverse(std))

    def _coefficients_from_marginals(self, marg):
        return {"coef_x0": base.with_final(self.mu, 1.0),
                "coef_xt": base.with_final(self.nu, 0.0),
                "std": base.with_final(constraints.positive(self.std_logits), 0.0)}

    def _step(self, i, chain, z, coefs):
        return ddpm.step(i, chain, z, coefs)
