"""The base of the deterministic multistep solvers (DPM-Solver++(2M) / (3M), iPNDM, UniPC /
UniPC-3): a training-free sampler whose coefficients and step are functions of its module."""

from ddss_tf.samplers import base

__all__ = ["Solver"]


class Solver(base.Sampler):
    """A deterministic training-free solver (it ignores the noise) whose coefficients and step
    are its module's functions: `coefficients_fn(marginals)` and `step_fn(i, chain, z, coefs)`
    (each subclass sets them with staticmethod). Multistep: steps read earlier predictions by a
    Python index, so the chain is not looped."""

    loopable = False
    coefficients_fn = step_fn = None

    @property
    def stochastic(self):
        return False

    def _coefficients_from_marginals(self, marg):
        return self.coefficients_fn(marg)

    def _step(self, i, chain, z, coefs):
        return self.step_fn(i, chain, z, coefs)
