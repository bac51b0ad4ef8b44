"""The record of one sampling run: states and predictions in visiting order (samplers.base)."""

import collections

__all__ = ["Chain", "Current"]


class Chain(collections.namedtuple("Chain", ["xs", "x0s", "eps"])):
    """The states and predictions of one sampling run, in visiting order; immutable.

    xs: states x_0 = x_T, x_1, ... (one per visited query time); state i is the one
      step i leaves from, i.e. after the corrector (UniPC), if the family has one;
    x0s, eps: x0_hat and eps_hat at each visited time.
    Each is a tuple (or, in the looped chain, a `Current`). The loop extends a chain
    by building a new one with the methods below; hooks read a chain, never change it.
    """

    __slots__ = ()

    @classmethod
    def start(cls, x_T):
        """The chain before its first step: the state x_T, no predictions yet."""
        return cls((x_T,), (), ())

    def with_predictions(self, x0, eps):
        """This chain with x0_hat and eps_hat at its last state appended."""
        return self._replace(x0s=self.x0s + (x0,), eps=self.eps + (eps,))

    def with_last_state(self, x):
        """This chain with its last state replaced by x (the corrector's x_i)."""
        return self._replace(xs=self.xs[:-1] + (x,))

    def with_next_state(self, x):
        """This chain with the next state appended."""
        return self._replace(xs=self.xs + (x,))


class Current:
    """The states of a looped chain as a step sees them: only the current one, at any index."""

    def __init__(self, value):
        self.value = value

    def __getitem__(self, index):
        return self.value
