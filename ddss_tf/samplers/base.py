"""The sampler layer and its one loop.

`Sampler` is the Keras layer every family derives from. It owns what all families
share: the query times (a stride, or +TIME variables), the frozen, rematerialised
call of the denoiser, input checks, the config, and the loop

    x = x_T
    for i = 0 .. K-1 (query time tau_{K-i}, noisiest first):
        x0_hat, eps_hat = denoiser(x_i, tau)         # network call in tf.recompute_grad
        x0_hat = family.predict_x0(...)              # GGDM / VARS use their own marginals
        if i == K-1: return x0_hat                   # the last step returns x0_hat
        x_i = family.correct(...)                    # UniPC's corrector; others: x_i
        x_{i+1} = family.step(i, chain, noise[i], coefficients)

A family overrides `_build_family` (create its variables),
`_coefficients_from_marginals` (every coefficient as a tensor, from the marginals at
the query times and the constraint maps of its variables), `_step`, and optionally
`_predict_x0` and `_correct`. Step functions are pure in (states, coefficients, noise
slice); the coefficients are computed once per call, outside the loop.

The hooks return new states and never change the chain: a `Chain` is an immutable
record of the run (tuples of states, x0_hat and eps_hat), and the loop extends it by
building a new one. UniPC's corrected x_i takes the place of the predicted x_i as
state i in the next chain (the network has already seen the predicted one; the step
and later corrections read the corrected one); every other family's `_correct`
returns x_i itself. x_{i+1} from `_step` is appended.

loop=True runs the same chain as one tf.while_loop over its first K - 1 steps
(then the last x0_hat), so a compiler sees the network (and its rematerialised
backward) once whatever K: XLA's compile time no longer grows with K, and memory
stays flat in K with remat. The step index is then a tensor, so a family opts in
with `loopable` when its `_step` reads only the current state (`chain.xs[i]`,
`chain.x0s[i]`, `chain.eps[i]`), or overrides `_loop_carry` / `_loop_step` to carry
what it needs from earlier states (GGDM). The multistep solvers stay unrolled, and so
does the chain over a SavedModel network (its graph reads variables of its own, which a
loop's gradient cannot capture).

Coefficients that depend on the guidance scale (guidance_scales=(w_1, ..., w_n), n >= 2,
increasing): the layer keeps one copy of its variables per anchor scale w_j (trainable,
`<name>_at_scales` [n, ...]) and reads its family's variables (then not trainable) as the
piecewise-linear interpolation in w between the two anchors around the scale of the
denoiser it runs on (`Denoiser.guidance_scale`, clipped to [w_1, w_n]), through a
`keras.StatelessScope`: one sampler for every scale in the range, searched over it
(ddss_tf.guidance). On a denoiser without a scale the family's variables are read as
stored: the values `set_guidance_scale` put there (initially every anchor's common start),
which are also what `coefficients()` and `query_times()` report, on any denoiser.

Frozen network: the denoiser's Keras network (if any) is not tracked by the
layer, and its weights are read once per call as stop-gradient tensors and fed
to the network through `keras.StatelessScope`, so no network variable is ever
watched by a tape or by `tf.recompute_grad`: the backward pass computes no weight
gradients for it, and `layer.trainable_variables` holds only sampler variables.
"""

import contextlib

import numpy as np
import tensorflow as tf
import keras

from ddss_tf import schedules
from ddss_tf.samplers import frozen
from ddss_tf.samplers import scales
from ddss_tf.samplers import times as times_lib
from ddss_tf.samplers.chain import Chain, Current

__all__ = ["Sampler", "Chain"]


def _constant(value):
    value = np.asarray(value, np.float32)

    def initializer(shape, dtype=None):
        return tf.cast(tf.reshape(value, shape), dtype or tf.float32)

    return initializer


class Sampler(keras.layers.Layer):
    """A K-step sampler over a canonical denoiser (see `samplers.create`).

    Args:
      denoiser: a `denoisers.Denoiser` (x_t, t) -> (x0_hat, eps_hat).
      num_steps: K, number of network evaluations, in [1, T].
      stride: initial query times, one of `times.stride_names()`; None picks the
        family's default (`flow_stride` on a rectified-flow schedule).
      time: learn the query times (+TIME).
      remat: wrap every network call in tf.recompute_grad.
      loop: run the chain as a tf.while_loop (families with `loopable`; see module doc).
      guidance_scales: None, or n >= 2 increasing anchor scales: coefficients that depend on
        the denoiser's guidance scale (see module doc; families with variables only).
      **kwargs: Keras layer arguments (name, dtype, trainable).
    """

    family = None
    default_stride = "quadratic"
    # On a rectified-flow schedule (whose quadratic grid would start the chain from noise at
    # s = 0.8, far from it): KerasHub's Euler grid; the multistep solvers take diffusers'.
    flow_stride = "flow_euler"
    loopable = True  # whether the chain can run as a tf.while_loop (a tensor step index)

    def __init__(self, denoiser, num_steps=10, stride=None, time=False, remat=True, loop=False,
                 guidance_scales=None, **kwargs):
        super().__init__(**kwargs)
        if hasattr(denoiser, "guided"):
            raise ValueError("the denoiser is conditional: bind the labels and the guidance "
                             "scale first, denoiser.guided(labels, guidance_scale)")
        if not (callable(denoiser) and hasattr(denoiser, "schedule")):
            raise ValueError(
                "denoiser must be a denoisers.Denoiser (from_eps_fn / from_keras_model), "
                f"got {type(denoiser).__name__}")
        self._denoiser = denoiser
        self.schedule = denoiser.schedule
        times_lib.check_num_steps(num_steps, self.schedule.num_timesteps)
        self.num_steps = int(num_steps)
        if stride is None:
            stride = self.flow_stride if schedules.is_flow(self.schedule) else self.default_stride
        self.stride = stride
        self.initial_times = times_lib.initial_times(self.schedule, self.stride, self.num_steps)
        self.time = _check_bool("time", time)
        self.remat = _check_bool("remat", remat)
        self.loop = _check_bool("loop", loop)
        if self.loop and not self.loopable:
            raise ValueError(f"loop=True does not apply to the {self.family} family (its steps read "
                             "earlier predictions by a Python index); use loop=False")
        self.guidance_scales = scales.check_anchors(guidance_scales)
        self._fixed = None
        self._jit_network = False
        self.build()

    # ---- variables ----
    def build(self, input_shape=None):
        """Create the +TIME logits and the family's variables; precompute fixed coefficients."""
        with tf.init_scope():
            if self.time:
                self.time_logits = self.add_logits("time_logits", times_lib.learned_times_inverse(
                    self.initial_times, self.schedule.num_timesteps))
            self._build_family()
            if self.guidance_scales is not None:
                self._build_anchors()
            if not self.weights:
                marg = times_lib.marginals(self.schedule, self.initial_times, tf.float64)
                coefs = dict(self._coefficients_from_marginals(marg), query_times=self.initial_times)
                self._fixed = {k: np.asarray(v, np.float64) for k, v in coefs.items()}

    def _build_family(self):
        """Create the family's variables (none for training-free families)."""

    def add_logits(self, name, value):
        """A trainable float32 variable initialised to `value` (float64 numpy); with
        guidance_scales, a variable read at the denoiser's scale (not trained itself)."""
        value = np.asarray(value, np.float64)
        return self.add_weight(name=name, shape=value.shape, initializer=_constant(value),
                               trainable=self.guidance_scales is None)

    def _build_anchors(self):
        """One trainable copy [n, ...] of every variable per anchor scale, all at its start."""
        if not self.weights:
            raise ValueError(f"guidance_scales: the {self.family} family has no coefficients to "
                             "learn (a training-free sampler is the same at every scale)")
        self._interpolated = list(self.weights)
        n = len(self.guidance_scales)
        self.anchors = [self.add_weight(name=f"{v.name}_at_scales", shape=(n,) + tuple(v.shape),
                                        initializer=_constant(np.stack([v.numpy()] * n)))
                        for v in self._interpolated]

    def scale_weights(self, guidance_scale):
        """[n] weights of the anchors at `guidance_scale` (`scales.interpolation_weights`)."""
        return scales.interpolation_weights(self.guidance_scales, guidance_scale)

    def _values_at(self, guidance_scale):
        """[(family variable, its value at the scale)] for a keras.StatelessScope."""
        weights = self.scale_weights(guidance_scale)
        return [(v, tf.tensordot(weights, tf.convert_to_tensor(a), 1))
                for v, a in zip(self._interpolated, self.anchors)]

    def start_from(self, learned):
        """Copy learned samplers' variables into this one (the start of a search).

        Args:
          learned: samplers built like this one (family, K, stride, +TIME and the family's
            settings; `_SETTINGS_ANY` may differ) without guidance_scales: one, or with
            guidance_scales one per anchor, in the anchors' order (sampler j's values
            become anchor j's), or one for every anchor.
        """
        learned = list(learned)
        n = 1 if self.guidance_scales is None else len(self.guidance_scales)
        if len(learned) not in {1, n}:
            raise ValueError(f"start_from takes one learned sampler or one per anchor ({n}), "
                             f"got {len(learned)}")
        mine = _settings(self)
        for other in learned:
            if getattr(other, "guidance_scales", None) is not None:
                raise ValueError("start_from takes samplers searched at one guidance scale, "
                                 f"not across scales {list(other.guidance_scales)}")
            theirs = _settings(other)
            if theirs != mine:
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise ValueError("start_from needs a sampler built like this one; it differs in "
                                 + ", ".join(f"{k} ({theirs.get(k)!r}, here {mine.get(k)!r})"
                                             for k in diff))
        learned = learned * (n // len(learned))
        with tf.init_scope():
            if self.guidance_scales is None:
                self.set_weights(learned[0].get_weights())
                return
            for var, anchors in zip(self._interpolated, self.anchors):
                values = [_named(other, var.name).numpy() for other in learned]
                anchors.assign(np.stack(values))
            self.set_guidance_scale(self.guidance_scales[-1])

    def set_guidance_scale(self, guidance_scale):
        """Store the coefficients at `guidance_scale` in the family's variables: what
        `coefficients()` and a call on a denoiser without a scale read (guidance_scales only)."""
        if self.guidance_scales is None:
            raise ValueError("set_guidance_scale applies to a sampler built with guidance_scales")
        with tf.init_scope():
            for v, value in self._values_at(guidance_scale):
                v.assign(value)

    # ---- public queries ----
    @property
    def denoiser(self):
        return self._denoiser

    @property
    def stochastic(self):
        """Whether the sampler draws noise (deterministic ones accept noise=None)."""
        return True

    @contextlib.contextmanager
    def using_denoiser(self, denoiser):
        """Calls (and traces) inside the block run on `denoiser` instead of the layer's own:
        the same model in another form, e.g. its network in bfloat16 (ddss_tf.precision)."""
        if denoiser.schedule.get_config() != self.schedule.get_config():
            raise ValueError("using_denoiser needs a denoiser on the layer's schedule")
        saved, self._denoiser = self._denoiser, denoiser
        try:
            yield self
        finally:
            self._denoiser = saved

    @contextlib.contextmanager
    def compiling_network(self):
        """Calls traced inside the block XLA-compile the network call on its own (its forward
        and backward pass), outside any enclosing XLA program: how the search runs a looped
        chain on one device (search.trainer), the loop itself staying graph ops."""
        saved, self._jit_network = self._jit_network, True
        try:
            yield self
        finally:
            self._jit_network = saved

    def query_times(self):
        """The K query times, descending, float64 numpy, model time units."""
        if not self.time:
            return self.initial_times.copy()
        with tf.init_scope():
            t = times_lib.learned_times(self.time_logits, self.schedule.num_timesteps)
            return np.asarray(t, np.float64)

    def coefficients(self):
        """Every coefficient the sampler uses, after the constraint maps.

        Returns a dict of float64 numpy arrays whose first axis has K entries in
        visiting order: per step (entry i describes the step leaving tau_{K-i}; the
        last one, the step to data) or, for GGDM's mu / sigma / marginals, per state.
        Always holds "query_times" [K] (descending). The family modules document
        their keys. A sampler across guidance scales reports those at its stored scale
        (`set_guidance_scale`), whatever the scale of the denoiser it runs on.
        """
        with tf.init_scope():
            return {k: np.asarray(v, np.float64)
                    for k, v in self.coefficient_tensors(stored=True).items()}

    def coefficient_tensors(self, stored=False):
        """`coefficients()` as tensors in the compute dtype, computed in the current context.

        Inside a tf.function the learnable ones read the layer's variables in the
        graph (what a SavedModel's `coefficients` signature returns); eagerly they
        are the same values as `coefficients()`, before the float64 cast. A sampler across
        guidance scales computes them at the scale of its denoiser when it has one (unless
        `stored`: at the stored scale, as `coefficients()`).
        """
        if self._fixed is not None:
            return {k: tf.constant(v, self.compute_dtype) for k, v in self._fixed.items()}
        scale = None if stored else getattr(self._denoiser, "guidance_scale", None)
        if self.guidance_scales is not None and scale is not None:
            with keras.StatelessScope(state_mapping=self._values_at(scale)):
                return self._learned_coefficient_tensors()
        return self._learned_coefficient_tensors()

    def _learned_coefficient_tensors(self):
        if self.time:
            t = times_lib.learned_times(self.time_logits, self.schedule.num_timesteps)
            t = tf.cast(t, self.compute_dtype)
        else:
            t = self.initial_times
        marg = times_lib.marginals(self.schedule, t, self.compute_dtype)
        coefs = dict(self._coefficients_from_marginals(marg))
        coefs["query_times"] = t if self.time else tf.constant(t, self.compute_dtype)
        return coefs

    def _coefficients_from_marginals(self, marg):
        """The family's coefficient tensors [K, ...] from `times.Marginals` at the query times.

        Returns a dict without "query_times" (the base class adds it).
        """
        raise NotImplementedError

    # ---- the loop ----
    def call(self, x_T, noise=None):
        """x_T [B, H, W, C]; noise [K, B, H, W, C] (None for deterministic samplers) -> x0."""
        x_T, noise = self._check_inputs(x_T, noise)
        coefs = self.coefficient_tensors()
        t = coefs["query_times"]
        denoise = self._denoise_fn()
        if self.looped:
            return self._looped_call(x_T, noise, coefs, denoise)
        chain = Chain.start(x_T)
        for i in range(self.num_steps):
            x0, eps = denoise(chain.xs[i], t[i])
            x0 = self._predict_x0(i, chain.xs[i], x0, eps, coefs)
            chain = chain.with_predictions(x0, eps)
            if i == self.num_steps - 1:
                return x0
            chain = chain.with_last_state(self._correct(i, chain, coefs))
            z = None if noise is None else noise[i]
            chain = chain.with_next_state(self._step(i, chain, z, coefs))
        raise AssertionError("unreachable")

    def _looped_call(self, x_T, noise, coefs, denoise):
        """`call` as one tf.while_loop over steps 0 .. K-2, then the last x0_hat."""
        k, t = self.num_steps, coefs["query_times"]

        def body(i, x, carry):
            x0, eps = denoise(x, tf.gather(t, i))
            x0 = self._predict_x0(i, x, x0, eps, coefs)
            z = None if noise is None else tf.gather(noise, i)
            x, carry = self._loop_step(i, x, x0, eps, z, coefs, carry)
            return i + 1, x, carry

        x, carry = x_T, self._loop_carry(x_T, coefs)
        if k > 1:
            _, x, _ = tf.while_loop(lambda i, x, carry: i < k - 1, body,
                                    (tf.constant(0), x, carry), maximum_iterations=k - 1)
        x0, eps = denoise(x, t[k - 1])
        return self._predict_x0(k - 1, x, x0, eps, coefs)

    @property
    def looped(self):
        """Whether calls run the chain as a tf.while_loop: loop=True, unless the network is a
        graph reading its own variables (a SavedModel's), whose gradient inside a loop cannot
        be taken (such a chain stays unrolled)."""
        network = getattr(self._denoiser, "network", None)
        return self.loop and not any(getattr(layer, "runs_own_variables", False)
                                     for layer in getattr(network, "layers", ()))

    def _loop_carry(self, x_T, coefs):
        """What the looped chain carries from step to step besides the state (nothing)."""
        return ()

    def _loop_step(self, i, x, x0, eps, z, coefs, carry):
        """(x_{i+1}, carry) in the looped chain; i is a tensor. By default `_step` on the
        current state alone, which is all a `loopable` family's step reads."""
        chain = Chain(*(Current(v) for v in (x, x0, eps)))
        return self._step(i, chain, z, coefs), carry

    def _predict_x0(self, i, x, x0, eps, coefs):
        """x0_hat at step i; the denoiser's by default."""
        return x0

    def _correct(self, i, chain, coefs):
        """The state x_i after seeing x0_hat at it (UniPC's corrector); x_i by default.

        Returns the new state; the loop puts it in a new chain in place of x_i, and the
        step (and later corrections) read it there.
        """
        return chain.xs[i]

    def _step(self, i, chain, z, coefs):
        """x_{i+1} from the chain after step i (x0s[i] and the corrected xs[i] in it);
        z [B, H, W, C] or None. Returns the new state; the loop appends it."""
        raise NotImplementedError

    def clip_x0(self, x0):
        """Apply the denoiser's data-range clip (when it has one) to a family's own x0_hat."""
        if getattr(self._denoiser, "clip_x0", False):
            return tf.clip_by_value(x0, *self._denoiser.data_range)
        return x0

    def _denoise_fn(self):
        """(x [B,H,W,C], t scalar) -> (x0_hat, eps_hat), frozen, rematerialised if remat.

        Only the network call fn(x_t, t) -> prediction is rematerialised; the cheap
        conversions around it (`Denoiser.network_inputs`, `Denoiser.from_prediction`) stay
        outside.
        This matters in graph mode and under XLA: tf.recompute_grad delays the
        recomputation until the gradient of its *first* output arrives, and a
        (x0_hat, eps_hat) pair whose x0_hat is unused (GGDM, VARS) would receive a
        constant zero gradient there, letting every recomputation run at once.
        """
        den = self._denoiser
        network = getattr(den, "network", None)
        if network is not None and getattr(network, "weights", None):
            values = [tf.stop_gradient(tf.convert_to_tensor(v.value)) for v in network.weights]
            call = (frozen.stateless_call(den.fn, network.weights) if frozen.in_xla_context()
                    else self._network_call())

            def predict(x, t):
                return tf.cast(call(x, t, values), x.dtype)
        else:
            def predict(x, t):
                return tf.cast(den.fn(x, t), x.dtype)

        if self.remat:
            predict = tf.recompute_grad(predict)

        def denoise(x, t):
            t = tf.fill(tf.shape(x)[:1], tf.cast(t, x.dtype))
            return den.from_prediction(predict(*den.network_inputs(x, t)), x, t)

        return denoise

    def _network_call(self):
        """The frozen network as one tf.function (x, t, weight values) -> prediction, shared
        by every sampler on the same denoiser (`frozen.network_function`).

        The weights come in as arguments and reach the Keras model through
        `keras.StatelessScope`, so no network variable is watched or tracked. Being
        one function, the network is traced once per input shape and every step of
        the chain calls the same graph: a K-step chain traces in seconds instead of
        tracing the network K times (2K times with remat), and eager sampling runs
        the compiled network at each step. Under XLA the network is inlined instead
        (`frozen.in_xla_context`): called through a nested function there, XLA recompiled
        the chain whenever the input values changed.
        """
        return frozen.network_function(self._denoiser, self._jit_network)

    def _check_inputs(self, x_T, noise):
        x_T = tf.convert_to_tensor(x_T)
        if not x_T.dtype.is_floating or x_T.shape.rank != 4:
            raise ValueError(
                f"x_T must be a float tensor [B, H, W, C], got {x_T.dtype.name} of shape {x_T.shape}")
        x_T = tf.cast(x_T, self.compute_dtype)
        if noise is None:
            if self.stochastic:
                raise ValueError(
                    f"the {self.family} sampler draws noise: pass noise of shape "
                    f"[num_steps={self.num_steps}, B, H, W, C] (see ddss_tf.noise.draw)")
            return x_T, None
        noise = tf.convert_to_tensor(noise)
        expected = tf.TensorShape([self.num_steps]).concatenate(x_T.shape)
        if noise.shape.rank != 5 or not expected.is_compatible_with(noise.shape):
            raise ValueError(
                f"noise must have shape [num_steps, B, H, W, C] = {expected.as_list()}, "
                f"got {noise.shape.as_list() if noise.shape.rank is not None else noise.shape}")
        return x_T, tf.cast(noise, self.compute_dtype)

    # ---- config ----
    def _family_config(self):
        """The family's constructor options (eta, pred, init, variance)."""
        return {}

    def get_config(self):
        """Constructor arguments; the denoiser is not part of it (see `from_config`)."""
        config = super().get_config()
        config.update(family=self.family, num_steps=self.num_steps, stride=self.stride,
                      time=self.time, remat=self.remat, loop=self.loop)
        if self.guidance_scales is not None:
            config["guidance_scales"] = list(self.guidance_scales)
        config.update(self._family_config())
        return config

    @classmethod
    def from_config(cls, config, denoiser=None):
        """Rebuild from `get_config()`; the denoiser (a model, not config) is a second argument.

        Variables are initialised as the constructor does; copy trained values with
        `set_weights(other.get_weights())` or by assigning the named variables.
        """
        if denoiser is None:
            raise ValueError(
                "a sampler's config does not hold the model: call from_config(config, denoiser)")
        config = dict(config)
        family = config.pop("family", cls.family)
        if family != cls.family:
            raise ValueError(f"config is for family {family!r}, not {cls.family!r}")
        return cls(denoiser, **config)


# Layer settings that do not change what a sampler's variables mean (`Sampler.start_from`).
_SETTINGS_ANY = ("name", "trainable", "dtype", "remat", "loop", "guidance_scales")


def _settings(layer):
    """The layer's config without `_SETTINGS_ANY`."""
    return {k: v for k, v in layer.get_config().items() if k not in _SETTINGS_ANY}


def _named(layer, name):
    """The layer's variable called `name`."""
    for var in layer.weights:
        if var.name == name:
            return var
    raise ValueError(f"the {layer.family} sampler has no variable {name!r}")


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def with_final(values, final):
    """Append the last step's (step to data) entry `final` to per-transition values [K-1]."""
    values = tf.convert_to_tensor(values)
    return tf.concat([values, tf.constant([final], values.dtype)], 0)


def transitions(marg):
    """(t, s) pairs of consecutive query times: each of alpha, sigma, log_snr split into

    values at t = tau_i and at s = tau_{i+1} for the K - 1 transitions i = 0 .. K-2.
    """
    cur = times_lib.Marginals(*(m[:-1] for m in marg))
    nxt = times_lib.Marginals(*(m[1:] for m in marg))
    return cur, nxt
