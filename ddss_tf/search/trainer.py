"""The DDSS training step: backpropagate the objective's loss through the whole sampling
chain (the loop around it, with checkpoints and signals, is ddss_tf.training.loop, driven by
search.run).

One step (Watson et al. 2022, Sec. 3), on every replica of a tf.distribute strategy:

    x_T, z_{1..K} ~ N(0, I)  keyed on (seed, step, replica)     # reparametrised randomness
    inputs = loss.inputs(key, ...)                              # e.g. a real minibatch
    L = loss(features, x_T, inputs) / num_replicas,  features(x) = phi(sampler(x, z))
    g = all-reduce-sum(dL/dtheta)           # theta: the sampler's variables and the loss's

`features(x, frozen=other)` runs another sampler on the same z, outside the gradient (a
loss's control variate: search.objectives.kid_cv).

The loss is the search objective's (search.objectives: KID, per-class KID on a guided model,
LD3, KID + teacher); the trainer does not know which. Each K-step chain makes K
rematerialised network calls.

Then, only when L and g are finite, clip g by its global norm and take an Adam
step. The gradient is computed by one tf.function (its per-replica body
XLA-compiled on a single replica; with a looped chain, the network call inside
the loop is compiled instead) and applied by a second one, so a NaN or Inf is
caught in between and never reaches the variables or a checkpoint. On a TPU the
whole replica step is one XLA program, the looped chain's loop included. With
cfg.precision = "bfloat16" the step runs the diffusion network and a Keras
feature network in bfloat16 (ddss_tf.precision); the layer's own (float32)
networks stay for evaluation and export.

Static shapes throughout: the per-replica batch is global_batch / replicas.
"""

import math

import contextlib

import keras
import tensorflow as tf

from ddss_tf import noise, precision

__all__ = ["Trainer"]


def _is_tpu(strategy):
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


class Trainer:
    """Holds the sampler, the loss, the optimiser and the compiled step functions of one search.

    Args:
      layer: a learnable sampler layer (built inside `strategy.scope()`).
      extractor: differentiable images -> features [B, d].
      loss: the search objective's `objectives.Loss` (not yet built: built here, in the
        strategy's scope).
      strategy: the tf.distribute strategy the layer's variables live in.
      cfg: the SearchConfig (batch_size, learning_rate, lr_decay, train_steps, grad_clip,
        seed, xla, precision).
      image_shape: (H, W, C) of one sample.
    """

    def __init__(self, layer, extractor, loss, strategy, cfg, image_shape):
        self.layer, self.strategy, self.cfg, self.loss = layer, strategy, cfg, loss
        self.extractor = precision.extractor(extractor, cfg.precision)
        step_denoiser = precision.denoiser(layer.denoiser, cfg.precision)
        if loss.guided and step_denoiser is not layer.denoiser:
            raise ValueError("a guided search runs in float32")
        self._denoising = (contextlib.nullcontext if step_denoiser is layer.denoiser
                           else lambda: layer.using_denoiser(step_denoiser))
        self._compiling = contextlib.nullcontext  # or layer.compiling_network (below)
        self.replicas = strategy.num_replicas_in_sync
        if loss.replicas != self.replicas:
            raise ValueError(f"the loss was made for {loss.replicas} replica(s), the strategy "
                             f"has {self.replicas}")
        self.local_batch = cfg.batch_size // self.replicas
        self.image_shape = [int(s) for s in image_shape]
        with strategy.scope():
            loss.build(layer, cfg.seed)
            self.variables = list(layer.trainable_variables) + list(loss.variables)
            lr = cfg.learning_rate
            if cfg.lr_decay == "cosine":
                lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=cfg.train_steps)
            # The paper's Adam: default betas, epsilon 1e-8.
            self.optimizer = keras.optimizers.Adam(lr, epsilon=1e-8)
            self.optimizer.build(self.variables)
        # A plain host variable, not a distributed one: the loop reads it every step.
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        # The XLA-compiled part takes the noise as inputs: drawn inside it, XLA treated the
        # step-keyed seeds as compile-time constants and recompiled on every step.
        if self.replicas == 1 and not _is_tpu(strategy):  # a TPU, even one core, needs strategy.run
            # A looped chain runs its loop as graph ops around an XLA-compiled network call:
            # XLA's CPU backend lowers the transposed-kernel convolutions of a backward pass
            # inside a while body without its fast path (its convolution canonicalisation visits
            # the entry computation only), which made whole-step compiled loops 4x slower.
            if cfg.xla and layer.looped:
                self._compiling = layer.compiling_network
            self._grads = tf.function(self.loss_and_gradients,
                                      jit_compile=bool(cfg.xla) and not layer.looped)
            self._compute = tf.function(self._replica_step)
        else:
            # The all-gather is a synchronisation point, which a nested tf.function inside
            # strategy.run cannot hold; jit_compile on the function that calls strategy.run
            # fails, and XLA with two replicas on logical CPUs cannot read the variables
            # (docs/design.md, "Distribution"). (On TPU the whole replica function is compiled
            # anyway.)
            self._grads = self.loss_and_gradients
            self._compute = tf.function(
                lambda step: strategy.run(self._replica_step, args=(step,)))
        self._apply = tf.function(self._apply_fn)

    @property
    def compiles_network_alone(self):
        """True when the step XLA-compiles the network call on its own (layer.compiling_network)
        rather than the whole step: a looped chain with cfg.xla on one device, non-TPU."""
        return self._compiling is not contextlib.nullcontext

    def step_inputs(self, step, replica=0):
        """(x_T, noise, inputs) of one replica at one step, as the step draws them: the
        arguments of `loss_and_gradients`."""
        shape = [self.local_batch] + self.image_shape
        x_T, z, key = noise.step_noise(self.cfg.seed, step, replica, self.layer.num_steps, shape)
        return x_T, z, self.loss.inputs(key, self.local_batch, step)

    def _replica_step(self, step):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return self._grads(*self.step_inputs(step, replica))

    def loss_and_gradients(self, x_T, noise, inputs):
        """(global loss, global grad norm, all-reduced grads) on one replica: the gradient of
        the loss at the step's x_T, noise and its other `inputs` (Loss.inputs)."""
        ctx = tf.distribute.get_replica_context()
        variables = self.variables

        def features(x, frozen=None):
            if frozen is None:
                return self.extractor(self._scored(self.layer(x, noise)))
            # Another sampler on the same noise (a loss's control variate), not differentiated:
            # nothing of its chain is recorded.
            with tape.stop_recording(), self._frozen_contexts(frozen):
                return tf.stop_gradient(self.extractor(self._scored(frozen(x, noise))))

        with tf.GradientTape() as tape, self._denoising(), self._compiling():
            loss = self.loss(features, x_T, inputs)
        grads = tape.gradient(loss, variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                 for g, v in zip(grads, variables)]
        if self.replicas > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
        return loss, tf.linalg.global_norm(grads), grads

    @contextlib.contextmanager
    def _frozen_contexts(self, frozen):
        """The searched layer's precision and compilation, for another sampler `frozen`."""
        step_denoiser = precision.denoiser(frozen.denoiser, self.cfg.precision)
        with contextlib.ExitStack() as stack:
            if step_denoiser is not frozen.denoiser:
                stack.enter_context(frozen.using_denoiser(step_denoiser))
            if self.compiles_network_alone:
                stack.enter_context(frozen.compiling_network())
            yield

    def _scored(self, images):
        """The chain's samples as the loss scores them: clipped to the feature network's data
        range with cfg.clip_samples (as the evaluation scores them; no gradient flows through
        a clipped pixel), else as they are."""
        if not self.cfg.clip_samples:
            return images
        return tf.clip_by_value(images, *self.extractor.data_range)

    def _apply_fn(self, grads, norm):
        def apply(grads):
            if self.cfg.grad_clip > 0:
                grads, _ = tf.clip_by_global_norm(grads, self.cfg.grad_clip, use_norm=norm)
            # Keras' optimizer all-reduce-sums again under a strategy: hand it 1/R of the sum.
            grads = [g / self.replicas for g in grads]
            self.optimizer.apply_gradients(zip(grads, self.variables))

        self.strategy.run(apply, args=(grads,))
        self.step.assign_add(1)

    def train_step(self):
        """One step; returns (loss, grad_norm) as floats. Raises FloatingPointError on NaN/Inf
        before anything is updated."""
        loss, norm, grads = self._compute(self.step.read_value())  # a value, not the host variable
        first = self.strategy.experimental_local_results
        loss, norm = float(first(loss)[0]), float(first(norm)[0])  # equal on every replica
        if not (math.isfinite(loss) and math.isfinite(norm)):
            raise FloatingPointError(
                f"the loss or its gradient is not finite at step {int(self.step)} "
                f"(loss={loss}, grad_norm={norm}); nothing was updated")
        self._apply(grads, tf.constant(norm, tf.float32))
        return loss, norm
