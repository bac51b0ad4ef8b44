"""GGDM: generalised Gaussian diffusion samplers (Watson et al. 2022, sections 3-4).

Non-Markovian: every step may use all earlier (noisier) states of the chain. In the
paper's indexing (x_K noisiest, x_0 data) the process is
    x_{k-1} = mu_{k-1,0} x0_hat + sum_{u=k..K} mu_{k-1,u} x_u + sigma_{k-1} z,
with every mu and sigma a sigmoid of a trainable variable. Here states are indexed in
visiting order (state i is x at tau_{K-i}; state 0 = x_T):
    x^(i+1) = mu_x0[i+1] x0_hat_i + sum_{l<=i} mu[i+1, l] x^(l) + sigma[i+1] z_i,
and the last step returns x0_hat. mu_x0[0] and sigma[0] describe the top marginal
q(x^(0) | x_0) = N(mu_x0[0] x_0, sigma[0]^2 I) that starts the forward process.
Variables: `mu_x0_logits` [K], `mu_logits` [K-1] (the Markov weights mu[i+1, i]),
`mu_skip` [(K-1)(K-2)/2] (the weights mu[i, l] of earlier states, l < i-1, row by
row; only for K >= 3), `sigma_logits` [K].

One deviation from the paper: the weights of earlier states (`mu_skip`) are plain
real numbers, not sigmoids. Both baselines set them to exactly 0, the boundary of the
sigmoid's range, where a logit can only start at about -21 (`constraints.BOUNDARY`)
and its gradient is 1e-9 of the upstream one: under Adam they stayed at 1e-9 through
a whole search (measured on the bundled model), so the "GGDM" was a Markov sampler.
As plain reals they start at exactly 0 (the untrained layer is the baseline, bit for
bit) with full gradients, and may turn negative like a multistep solver's weights on
older states (DPM-Solver++(2M) puts -0.5 r on its previous x0 estimate).

x0_hat at state i is (x^(i) - sqrt(v_i) eps_hat) / a_i with the GGDM's own marginals
q(x^(i) | x_0) = N(a_i x_0, v_i I) from Theorem 1 (`theorem1`), computed in-graph.

+PRED (pred=True): x0_hat_i = pred_a[i] x^(i) - pred_b[i] eps_hat with
pred_a = 1 + softplus(.), pred_b = softplus(.) learned per step (`pred_a_logits`,
`pred_b_logits`, [K] each). Our reading of the paper's "the marginal coefficients
are also learned (with the VARS parametrisation) instead of Theorem 1": in a GGDM the
marginals (a_i, v_i) enter sampling *only* through x0_hat = x / a_i - sqrt(v_i) / a_i
eps_hat, so learning the marginals and learning (pred_a, pred_b) = (1 / a_i,
sqrt(v_i) / a_i) are the same degrees of freedom. We keep one parametrisation, the
paper's 1 + softplus / softplus (a_i <= 1 and v_i > 0 imply pred_a >= 1, pred_b > 0);
separate cumsum(softmax) marginals would be variables that no output depends on
(zero gradients). Theorem 1's marginals are still reported by `coefficients()`.

init="ddpm" / "ddim": the Markov chain of that baseline (mu[i+1, i] and mu_x0[i+1] its
x_t and x0_hat coefficients, the weights of earlier states 0), top
marginal (alpha, sigma) of the schedule at tau_K; +PRED starts at (1 / alpha, sigma /
alpha) of the schedule, which is what Theorem 1 gives at init.

init=<solver>, any of `solver_inits()` ("dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc",
"unipc_3", "ipndm"; beyond the paper; +PRED only): that training-free solver on the layer's
initial times, written over states (`solver_form`). Its step weighs earlier data (or noise)
predictions, each a combination of earlier states, so every weight of earlier states
is used, and they leave the sigmoid's range (x0 weights above 1, negative Markov
weights): with this init mu_x0 and the Markov weights are plain reals too (`free`). The
noise scales start at 0, as with DDIM. +PRED's x0_hat at init is the solver's, which
Theorem 1's marginals of the solver form are not.
"""

import numpy as np
import tensorflow as tf

from ddss_tf.samplers import constraints
from ddss_tf.samplers import learnable
from ddss_tf.samplers import times as times_lib
from ddss_tf.samplers.chain import Chain

__all__ = ["GGDM", "theorem1", "skip_indices", "solver_form", "solver_inits", "set_solvers"]

_SOLVERS = {}  # name -> layer class of every training-free solver (`set_solvers`)


def set_solvers(families):
    """Called once by `registry` with its solver column ({name: layer class}): the solvers a
    GGDM can be written from. The registry owns that list; this module reads it."""
    _SOLVERS.clear()
    _SOLVERS.update(families)


def solver_inits():
    """The solvers a GGDM can be written from (`samplers.solver_names()`), registry order."""
    return tuple(_SOLVERS)


class _Inits:
    """GGDM.inits: the learnable families' baselines, then every solver (`solver_inits()`)."""

    def __get__(self, layer, cls):
        return learnable.LearnableSampler.inits + solver_inits()


def skip_indices(num_steps):
    """Row-major (i, l) indices of mu's non-Markov entries: l < i - 1."""
    return [(i, l) for i in range(num_steps) for l in range(i - 1)]


def theorem1(mu_x0, mu, sigma):
    """Marginals q(x^(i) | x_0) = N(a_i x_0, v_i I) of a GGDM (Watson et al. 2022, Theorem 1).

    Args (visiting order): mu_x0 [K]; mu [K, K] strictly lower triangular (mu[i, l]
      weighs state l in state i); sigma [K]. Tensors.
    Returns (a [K], v [K]).

    With state 0 = the noisiest, Theorem 1's a^(1)_{tu} = mu_{tu}, v^(1)_t = sigma_t^2,
      a^(n+1)_{tu} = a^(n)_{tu} + a^(n)_{t,t+n} mu_{t+n,u},
      v^(n+1)_t   = v^(n)_t + (a^(n)_{t,t+n} sigma_{t+n})^2
    reads, for state i and its n-th earlier state i - n (the paper's t + n),
      A[i] += A[i, i-n] mu[i-n],   v[i] += (A[i, i-n] sigma[i-n])^2,   n = 1 .. K-1,
    where A[i] = (coefficient of x_0, coefficients of states 0..K-1); a_i = A[i, x_0].
    Each n updates all rows at once.
    """
    k = int(mu_x0.shape[0])
    base_rows = tf.concat([mu_x0[:, None], mu], axis=1)          # [K, K + 1]
    rows, v = base_rows, tf.square(sigma)
    for n in range(1, k):
        idx = [[i, 1 + i - n] for i in range(n, k)]
        c = tf.concat([tf.zeros([n], rows.dtype), tf.gather_nd(rows, idx)], 0)
        shifted = tf.concat([tf.zeros([n, k + 1], rows.dtype), base_rows[:k - n]], 0)
        rows = rows + c[:, None] * shifted
        shifted_sigma = tf.concat([tf.zeros([n], rows.dtype), sigma[:k - n]], 0)
        v = v + tf.square(c * shifted_sigma)
    return rows[:, 0], v


def solver_form(solver):
    """A training-free solver's steps written as GGDM steps over states, float64 numpy.

    Args:
      solver: a solver layer (`samplers.solver_names()`) on the GGDM's initial times.
    Returns (mu_x0 [K] with mu_x0[0] = 0 (the top marginal is the caller's), mu [K, K]).

    Every solver here is linear in its states and predictions, so its own `_correct` and
    `_step` run on basis vectors over (states s_0..s_{K-1}, data predictions m_0..m_{K-1})
    give its steps as coefficients: the GGDM states are the s_i the network is called at,
    eps_i = (s_i - alpha_i m_i) / sigma_i (what the denoiser returns), and a step gives
    s_{i+1} = row . s + p m_i once every earlier prediction m_j is replaced by its
    expression over states r_j, read back from the step that introduced it:
        mu_x0[i+1] = p,  mu[i+1] = row,  r_i = (e_{i+1} - row) / p,
    substituted into the chain's vectors as soon as it is known (a corrected state holding
    m_i becomes its row plus its m_i weight times r_i).
    """
    k = solver.num_steps
    marg = times_lib.marginals(solver.schedule, solver.initial_times, tf.float64)
    coefs = {n: np.asarray(v, np.float64)
             for n, v in solver._coefficients_from_marginals(marg).items()}
    alpha, sigma = np.asarray(marg.alpha), np.asarray(marg.sigma)
    basis = np.eye(2 * k)                           # s_0..s_{K-1}, then m_0..m_{K-1}
    mu_x0, mu = np.zeros([k]), np.zeros([k, k])
    chain = Chain.start(basis[0])
    for i in range(k - 1):
        m = basis[k + i]
        chain = chain.with_predictions(m, (chain.xs[i] - alpha[i] * m) / sigma[i])
        chain = chain.with_last_state(solver._correct(i, chain, coefs))
        nxt = solver._step(i, chain, None, coefs)
        if np.any(np.delete(nxt, list(range(i + 1)) + [k + i]) != 0) or nxt[k + i] == 0:
            raise ValueError(f"the {solver.family} step {i} is not s_(i+1) = row . s + p m_i "
                             "with p != 0: not a GGDM step")
        mu_x0[i + 1], mu[i + 1] = nxt[k + i], nxt[:k]
        known = -mu[i + 1]                          # m_i over states
        known[i + 1] += 1.0
        known /= mu_x0[i + 1]
        chain = Chain(*(tuple(_substitute(v, k + i, known) for v in part) for part in chain))
        chain = chain.with_next_state(basis[i + 1])
    return mu_x0, mu


def _substitute(v, index, known):
    """v over (states, predictions) with prediction `index` replaced by `known` (states)."""
    if v[index] == 0:
        return v
    w = v.copy()
    w[:known.shape[0]] = v[:known.shape[0]] + v[index] * known
    w[index] = 0.0
    return w


class GGDM(learnable.LearnableSampler):
    """Generalised Gaussian diffusion sampler, optionally with +PRED."""

    family = "ggdm"
    inits = _Inits()

    def __init__(self, denoiser, num_steps=10, stride=None, pred=False, init="ddpm", **kwargs):
        if not isinstance(pred, (bool, np.bool_)):
            raise ValueError(f"pred must be True or False, got {pred!r}")
        if init in solver_inits() and not pred:
            raise ValueError(f"init {init!r} needs pred=True (+PRED): without it x0_hat comes "
                             "from Theorem 1's marginals, which are not the solver's")
        self.pred = bool(pred)
        super().__init__(denoiser, num_steps, stride, init=init, **kwargs)

    @property
    def free(self):
        """mu_x0 and the Markov weights are plain reals (a solver's init), not sigmoids."""
        return self.init in solver_inits()

    def _family_config(self):
        return dict(super()._family_config(), pred=self.pred)

    def _build_family(self):
        k = self.num_steps
        marg = self.initial_marginals()
        alpha, sigma = np.asarray(marg.alpha), np.asarray(marg.sigma)
        inv = constraints.unit_interval_inverse
        if self.free:
            solver = _SOLVERS[self.init](self.denoiser, num_steps=k, stride=self.stride,
                                         remat=False)
            mu_x0, mu = solver_form(solver)
            mu_x0[0] = alpha[0]
            markov = np.diagonal(mu, -1)
            skip = np.array([mu[i, l] for i, l in skip_indices(k)])
            std = np.zeros([k - 1])
        else:
            coef_x0, coef_xt, std = self.baseline_transitions()
            mu_x0, markov = inv(np.r_[alpha[0], coef_x0]), inv(np.asarray(coef_xt[:k - 1]))
            skip = np.zeros([len(skip_indices(k))])
        self.mu_x0_logits = self.add_logits("mu_x0_logits", mu_x0)
        self.mu_logits = self.add_logits("mu_logits", markov)
        if k > 2:  # no earlier states to weigh below K = 3 (and an empty variable crashes
            # MultiWorkerMirroredStrategy's initial broadcast)
            self.mu_skip = self.add_logits("mu_skip", skip)
        self.sigma_logits = self.add_logits("sigma_logits", inv(np.r_[sigma[0], std]))
        if self.pred:
            self.pred_a_logits = self.add_logits("pred_a_logits", constraints.above_one_inverse(1 / alpha))
            self.pred_b_logits = self.add_logits("pred_b_logits", constraints.positive_inverse(sigma / alpha))

    def _coefficients_from_marginals(self, marg):
        k = self.num_steps
        sigma = constraints.unit_interval(self.sigma_logits)[0]
        if self.free:
            mu_x0, markov = (tf.cast(v, sigma.dtype) for v in (self.mu_x0_logits, self.mu_logits))
        else:
            mu_x0 = constraints.unit_interval(self.mu_x0_logits)[0]
            markov = constraints.unit_interval(self.mu_logits)[0]
        mu = tf.zeros([k, k], mu_x0.dtype)
        if k > 1:
            mu = tf.scatter_nd([(i + 1, i) for i in range(k - 1)], markov, [k, k])
        if k > 2:
            mu = mu + tf.scatter_nd(skip_indices(k), tf.cast(self.mu_skip, mu.dtype), [k, k])
        a, v = theorem1(mu_x0, mu, sigma)
        if self.pred:
            pred_a = constraints.above_one(self.pred_a_logits)
            pred_b = constraints.positive(self.pred_b_logits)
        else:
            pred_a, pred_b = 1.0 / a, tf.sqrt(v) / a
        return {"mu_x0": mu_x0, "mu": mu, "sigma": sigma, "marginal_a": a, "marginal_v": v,
                "pred_a": pred_a, "pred_b": pred_b}

    def _predict_x0(self, i, x, x0, eps, coefs):
        return self.clip_x0(coefs["pred_a"][i] * x - coefs["pred_b"][i] * eps)

    def _loop_carry(self, x_T, coefs):
        """acc [K, B, H, W, C]: acc[j] = sum over the states seen so far of mu[j, l] x^(l).

        In the looped chain a step reads what earlier states give it from acc[i + 1] instead
        of weighing all of them, so the backward pass keeps one state per step (weighing a
        buffer of all states would keep the whole buffer at every step: K^2 states).
        """
        return tf.repeat(tf.zeros_like(x_T)[None], self.num_steps, axis=0)

    def _loop_step(self, i, x, x0, eps, z, coefs, acc):
        weights = tf.gather(coefs["mu"], i, axis=1)               # mu[:, i]: state i in each state
        acc = acc + tf.reshape(weights, [-1] + [1] * x.shape.rank) * x[None]
        nxt = tf.gather(coefs["mu_x0"], i + 1) * x0 + tf.gather(acc, i + 1)
        if z is not None:
            nxt = nxt + tf.gather(coefs["sigma"], i + 1) * z
        return nxt, acc

    def _step(self, i, chain, z, coefs):
        """x^(i+1) = mu_x0[i+1] x0_hat_i + sum_{l<=i} mu[i+1, l] x^(l) + sigma[i+1] z_i."""
        x = coefs["mu_x0"][i + 1] * chain.x0s[i]
        for l in range(i + 1):
            x = x + coefs["mu"][i + 1, l] * chain.xs[l]
        if z is not None:
            x = x + coefs["sigma"][i + 1] * z
        return x
