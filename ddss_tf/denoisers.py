"""Turn any diffusion network into one canonical denoiser.

A `Denoiser` maps (x_t [B, H, W, C], t [B] real-valued model time) to
(x0_hat, eps_hat), whatever the network predicts. The conversion happens once,
here, so samplers never branch on the parametrisation:

  eps-prediction: x0_hat = (x_t - sigma(t) eps_hat) / alpha(t)
  x-prediction:   eps_hat = (x_t - alpha(t) x0_hat) / sigma(t)
  v-prediction:   x0_hat = alpha(t) x_t - sigma(t) v,  eps_hat = sigma(t) x_t + alpha(t) v
                  (Salimans & Ho 2022, with alpha^2 + sigma^2 = 1)
  flow (velocity) prediction, on a rectified-flow schedule (`schedules.RectifiedFlow`): the
                  network sees the flow state x_flow = c(t) x_t at its own time
                  `schedule.network_time(t)` (time_scale * s) and returns v = eps - x0, so
                  x0_hat = x_flow - s v,  eps_hat = x_flow + (1 - s) v
                  (x_flow = (1 - s) x0 + s eps; s = `schedule.flow_sigma(t)`)

With clip_x0=True, x0_hat is clipped to the data range and eps_hat is
recomputed from the clipped x0_hat so the pair stays consistent with x_t.

A conditional network fn(x_t, t, c) (c: integer labels [B] or an embedding [B, D]) is a
`ConditionalDenoiser`. `guided(c, w)` binds it to a batch's conditions and a classifier-free
guidance scale w (Ho & Salimans 2022), giving a plain `Denoiser` that every sampler accepts:

  pred = (1 + w) fn(x_t, t, c) - w fn(x_t, t, null)     (w = 0: the plain conditional model)

The two predictions come from one network call on the doubled batch. Combining the raw
outputs equals combining eps (or x0): the weights sum to 1 and the conversions are affine.
"""

import tensorflow as tf

from ddss_tf import schedules

__all__ = ["ConditionalDenoiser", "Denoiser", "from_eps_fn", "from_fn", "from_keras_model",
           "network_inputs", "predictions"]

_PREDICTIONS = ("eps", "x", "v", "flow")


def predictions():
    """What a wrapped network may predict."""
    return _PREDICTIONS


def append_dims(v, x):
    """Reshape a per-example vector v [B] (or a scalar) to broadcast against x [B, ...]."""
    v = tf.convert_to_tensor(v, dtype=x.dtype)
    if v.shape.rank == 0:
        return v
    return tf.reshape(v, tf.concat([tf.shape(v), tf.ones([x.shape.rank - 1], tf.int32)], 0))


class Denoiser:
    """Canonical denoiser over a network fn(x_t, t) -> eps | x0 | v.

    Args:
      fn: callable (x_t float32 [B, H, W, C], t float32 [B]) -> prediction [B, H, W, C].
      schedule: a `schedules.Schedule` (answers alpha, sigma at real t).
      prediction: "eps", "x", "v" or "flow" (the velocity eps - x0 of a rectified-flow model,
        on a `schedules.RectifiedFlow` only, which a flow model needs): what `fn` returns.
      clip_x0: clip x0_hat to `data_range` (and recompute eps_hat from it).
      data_range: (low, high) of the data, default (-1, 1).
      network: the underlying Keras model when there is one (for export and
        stateless calls); None for a plain function.
    """

    # The classifier-free guidance scale this denoiser applies (a number or a scalar tensor), set
    # by ConditionalDenoiser.guided; None for a model without guidance. A sampler whose
    # coefficients depend on the scale (samplers.base, guidance_scales) reads it here.
    guidance_scale = None

    def __init__(self, fn, schedule, prediction="eps", clip_x0=False, data_range=(-1.0, 1.0),
                 network=None):
        if prediction not in _PREDICTIONS:
            raise ValueError(
                f"unknown prediction {prediction!r}; accepted: {', '.join(_PREDICTIONS)}")
        if not callable(fn):
            raise ValueError(f"the model must be callable (x_t, t) -> prediction, got {type(fn)}")
        _check_flow(prediction, schedule)
        low, high = (float(v) for v in data_range)
        if not low < high:
            raise ValueError(f"data_range must be (low, high) with low < high, got {data_range}")
        self.fn = fn
        self.schedule = schedule
        self.prediction = prediction
        self.clip_x0 = bool(clip_x0)
        self.data_range = (low, high)
        self.network = network

    def __call__(self, x_t, t):
        """Returns (x0_hat, eps_hat), each shaped like x_t.

        x_t: float [B, H, W, C]; t: float [B] (or scalar) real-valued model time.
        """
        x_t = tf.convert_to_tensor(x_t)
        t = tf.cast(tf.convert_to_tensor(t), x_t.dtype)
        if t.shape.rank == 0:
            t = tf.fill(tf.shape(x_t)[:1], t)
        out = tf.cast(self.fn(*self.network_inputs(x_t, t)), x_t.dtype)
        return self.from_prediction(out, x_t, t)

    def network_inputs(self, x_t, t):
        """(state, time) the network is called with at (x_t, t) (`network_inputs`)."""
        return network_inputs(self.schedule, self.prediction, x_t, t)

    def from_prediction(self, out, x_t, t):
        """Convert a raw network output at (x_t, t) into (x0_hat, eps_hat)."""
        if self.prediction == "flow":
            return self._from_velocity(out, x_t, t)
        alpha = append_dims(self.schedule.alpha(t), x_t)
        sigma = append_dims(self.schedule.sigma(t), x_t)
        if self.prediction == "eps":
            eps, x0 = out, (x_t - sigma * out) / alpha
        elif self.prediction == "x":
            x0, eps = out, (x_t - alpha * out) / sigma
        else:
            x0, eps = alpha * x_t - sigma * out, sigma * x_t + alpha * out
        return self._clipped(x0, eps, x_t, alpha, sigma)

    def _from_velocity(self, v, x_t, t):
        """x0_hat = x_flow - s v, eps_hat = x_flow + (1 - s) v, x_flow = c x_t."""
        s = append_dims(self.schedule.flow_sigma(t), x_t)
        x_flow = x_t * append_dims(self.schedule.flow_scale(t), x_t)
        x0, eps = x_flow - s * v, x_flow + (1.0 - s) * v
        alpha = append_dims(self.schedule.alpha(t), x_t)
        return self._clipped(x0, eps, x_t, alpha, append_dims(self.schedule.sigma(t), x_t))

    def _clipped(self, x0, eps, x_t, alpha, sigma):
        """With clip_x0: x0 clipped to the data range, eps recomputed from it and x_t."""
        if self.clip_x0:
            x0 = tf.clip_by_value(x0, *self.data_range)
            eps = (x_t - alpha * x0) / sigma
        return x0, eps


class ConditionalDenoiser:
    """Canonical denoiser over a conditional network fn(x_t, t, c) -> eps | x0 | v.

    Args:
      fn: callable (x_t float32 [B, H, W, C], t float32 [B], c [B] int32 labels or [B, D]
        float32 embeddings) -> prediction [B, H, W, C].
      schedule, prediction, clip_x0, data_range, network: as `Denoiser`'s.
      null_condition: the condition meaning "no condition" (the dropped label of
        classifier-free guidance training): a label (typically the number of classes) or an
        embedding [D].
    """

    def __init__(self, fn, schedule, null_condition, prediction="eps", clip_x0=False,
                 data_range=(-1.0, 1.0), network=None):
        checked = Denoiser(fn, schedule, prediction, clip_x0, data_range, network)  # its checks
        self.fn, self.schedule, self.prediction = checked.fn, checked.schedule, checked.prediction
        self.clip_x0, self.data_range = checked.clip_x0, checked.data_range
        self.network = network
        self.null_condition = tf.convert_to_tensor(null_condition)
        if self.null_condition.shape.rank > 1:
            raise ValueError("null_condition must be a label (a scalar) or an embedding [D], got "
                             f"shape {self.null_condition.shape}")

    def _condition(self, c):
        """c checked against the null condition's rank plus a batch axis; a variable stays one
        (read at every call), anything else becomes a tensor."""
        if not isinstance(c, tf.Variable):
            c = tf.convert_to_tensor(c)
        if c.shape.rank != self.null_condition.shape.rank + 1:
            want = "labels [B]" if self.null_condition.shape.rank == 0 else "embeddings [B, D]"
            raise ValueError(f"this model is conditioned on {want}, got shape {c.shape}")
        return c

    def __call__(self, x_t, t, c):
        """(x0_hat, eps_hat) of the conditional model (no guidance)."""
        return self.guided(c, 0.0)(x_t, t)

    def guided(self, c, guidance_scale):
        """A `Denoiser` over (x_t, t): the model conditioned on c (as many as x_t's batch) with
        classifier-free guidance at `guidance_scale` (a number, a scalar tensor or a variable;
        the Python number 0 skips the unconditional call). Tensors and variables are read at
        every call, so one guided denoiser serves a batch's labels assigned to a variable."""
        c = self._condition(c)
        if isinstance(guidance_scale, (int, float)):
            if guidance_scale < 0:
                raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
            if guidance_scale == 0:
                return self._bound(lambda x_t, t: self.fn(x_t, t, self._read(c)), 0.0)

        def fn(x_t, t):
            labels = self._read(c)
            # Made here from numpy, not captured: an eager tensor captured inside a looped
            # chain's gradient fails to trace.
            null = tf.broadcast_to(tf.constant(self.null_condition.numpy()), tf.shape(labels))
            both = self.fn(tf.concat([x_t, x_t], 0), tf.concat([t, t], 0),
                           tf.concat([labels, null], 0))
            cond, uncond = tf.split(both, 2, axis=0)
            w = tf.cast(guidance_scale, cond.dtype)
            return cond + w * (cond - uncond)

        return self._bound(fn, guidance_scale)

    def unbound(self):
        """A `Denoiser` with this model's schedule and network that refuses to run: what a
        sampler for several conditions is built on, each call then run under
        `layer.using_denoiser(self.guided(c, w))`."""
        def fn(x_t, t):
            raise ValueError("a sampler of a conditional model runs with its labels bound: "
                             "layer.using_denoiser(denoiser.guided(labels, guidance_scale))")

        return self._bound(fn)

    def _read(self, c):
        return tf.cast(c, self.null_condition.dtype)

    def _bound(self, fn, guidance_scale=None):
        denoiser = Denoiser(fn, self.schedule, self.prediction, self.clip_x0, self.data_range,
                            network=self.network)
        denoiser.guidance_scale = guidance_scale
        return denoiser


def network_inputs(schedule, prediction, x_t, t):
    """(state, time) a network predicting `prediction` is called with at (x_t [B, H, W, C], t [B]):
    x_t and t themselves, or for a flow model the flow state c(t) x_t and
    `schedule.network_time(t)` (what `ddss_train_model` trains it on)."""
    if prediction != "flow":
        return x_t, t
    return x_t * append_dims(schedule.flow_scale(t), x_t), schedule.network_time(t)


def _check_flow(prediction, schedule):
    """A flow model runs on a rectified-flow schedule, and such a schedule serves flow models."""
    if (prediction == "flow") == schedules.is_flow(schedule):
        return
    if prediction == "flow":
        raise ValueError(f"prediction flow (a rectified-flow velocity) needs a rectified_flow "
                         f"schedule, got {schedule.get_config().get('kind')}; accepted with it: "
                         f"{', '.join(p for p in _PREDICTIONS if p != 'flow')}")
    raise ValueError(f"a rectified_flow schedule is for flow models (the network is called on "
                     f"the flow state at its flow time): prediction flow, not {prediction}")


def from_fn(fn, schedule, prediction="eps", clip_x0=False, data_range=(-1.0, 1.0)):
    """Wrap a plain function fn(x_t, t) -> eps | x0 | v."""
    return Denoiser(fn, schedule, prediction, clip_x0, data_range)


def from_eps_fn(eps_fn, schedule, clip_x0=False, data_range=(-1.0, 1.0)):
    """Wrap eps_fn(x_t [B, H, W, C] float32, t [B] float32) -> eps (docs/design.md, "Public interfaces")."""
    return Denoiser(eps_fn, schedule, "eps", clip_x0, data_range)


def from_keras_model(model, schedule, prediction="eps", clip_x0=False, data_range=(-1.0, 1.0),
                     null_condition=None):
    """Wrap a Keras model called as model([x_t, t]) -> eps | x0 | v, or a conditional one,
    model([x_t, t, c]), as a `ConditionalDenoiser`.

    The model is frozen (trainable=False): samplers never train its weights. A model whose
    output has twice x_t's channels (iDDPM / ADM "learn_sigma": eps, then the variance
    interpolation) is accepted with prediction "eps"; its first C channels are the eps
    used (DDSS learns its own variances). null_condition (conditional models): the label or
    embedding meaning "none"; by default the last row of a layer named "class_emb" (this
    package's UNet) for labels, zeros for embeddings [B, D].
    """
    if not hasattr(model, "trainable_variables"):
        raise ValueError(f"expected a Keras model (x_t, t) -> prediction, got {type(model)}")
    model.trainable = False
    channels = _learned_variance_channels(model, prediction)

    def fn(x_t, t, *c):
        out = model([x_t, t, *c], training=False)
        return out if channels is None else out[..., :channels]

    if len(getattr(model, "inputs", None) or ()) != 3:
        return Denoiser(fn, schedule, prediction, clip_x0, data_range, network=model)
    if null_condition is None:
        null_condition = _default_null_condition(model)
    return ConditionalDenoiser(fn, schedule, null_condition, prediction, clip_x0, data_range,
                               network=model)


def _default_null_condition(model):
    c = model.inputs[2]
    if "int" not in str(c.dtype):
        if len(c.shape) != 2 or c.shape[1] is None:
            raise ValueError(f"the model's condition input has shape {tuple(c.shape)}: accepted "
                             "are labels [B] (int) and embeddings [B, D]")
        return tf.zeros([c.shape[1]], tf.float32)
    try:
        return model.get_layer("class_emb").input_dim - 1
    except ValueError:
        raise ValueError("the model takes labels but has no layer 'class_emb' to read its null "
                         "label from; give null_condition (the label meaning none)") from None


def _learned_variance_channels(model, prediction):
    """C when the model maps C input channels to 2C outputs (eps and a variance), else None."""
    try:
        c_in, c_out = model.inputs[0].shape[-1], model.outputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):  # no static inputs / outputs
        return None
    if c_in is None or c_out != 2 * c_in:
        return None
    if prediction != "eps":
        raise ValueError(f"the model returns {c_out} channels for {c_in}-channel images (eps and "
                         f"a learned variance): accepted with prediction eps, not {prediction}")
    return c_in
