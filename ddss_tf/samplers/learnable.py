"""The shared part of the learnable families (DDIM-sigma, VARS, RDDIM, GGDM).

Each learnable family keeps unconstrained float32 variables, maps them to valid
coefficients with `constraints`, and is initialised so that the untrained layer
reproduces a baseline on the same x_T and noise (to float32 rounding):
init="ddpm" (the paper's choice: DDPM with K sub-steps, variance beta_tilde) or
init="ddim" (DDIM, eta = 0), both on the layer's initial query times.
"""

import numpy as np
import tensorflow as tf

from ddss_tf.samplers import base
from ddss_tf.samplers import ddim
from ddss_tf.samplers import ddpm
from ddss_tf.samplers import times as times_lib

__all__ = ["LearnableSampler"]


class LearnableSampler(base.Sampler):
    """A sampler with trainable coefficients, initialised to reproduce a baseline.

    init="ddpm": DDPM (variance beta_tilde) on the same K query times, as the paper
    initialises every family; init="ddim": DDIM(eta=0) on the same times.
    """

    inits = ("ddpm", "ddim")

    def __init__(self, denoiser, num_steps=10, stride=None, init="ddpm", **kwargs):
        if init not in self.inits:
            raise ValueError(
                f"init {init!r} does not apply to the {self.family} family; accepted: "
                f"{', '.join(self.inits)}")
        self.init = init
        super().__init__(denoiser, num_steps, stride, **kwargs)

    def _family_config(self):
        return {"init": self.init}

    def initial_marginals(self):
        """`times.Marginals` at the initial query times, float64 tensors (eager)."""
        return times_lib.marginals(self.schedule, self.initial_times, tf.float64)

    def baseline_transitions(self):
        """The init baseline as x_s = coef_x0 x0_hat + coef_xt x_t + std z, per transition.

        Returns float64 numpy (coef_x0, coef_xt, std), each [K-1].
        """
        cur, nxt = base.transitions(self.initial_marginals())
        if self.init == "ddpm":
            coef_x0, coef_xt, var, _ = ddpm.transition(
                cur.alpha, cur.sigma, nxt.alpha, nxt.sigma, ddpm.schedule_ratio(cur, nxt))
            std = tf.sqrt(var)
        else:
            coef_x0, coef_xt = ddim.x0_xt_form(cur, nxt)
            std = tf.zeros_like(coef_x0)
        return tuple(np.asarray(v, np.float64) for v in (coef_x0, coef_xt, std))
