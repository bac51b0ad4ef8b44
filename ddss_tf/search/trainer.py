"""The DDSS training step: backpropagate KID through the whole sampling chain (the loop
around it, with checkpoints and signals, is ddss_tf.training.loop, driven by search.run).

One step (Watson et al. 2022, Sec. 3), on every replica of a tf.distribute strategy:

    x_T, z_{1..K} ~ N(0, I)  keyed on (seed, step, replica)     # reparametrised randomness
    x_0 = sampler(x_T, z)                                       # K rematerialised network calls
    L = KID loss(phi(x_0) of the global batch, real features) / num_replicas
    g = all-reduce-sum(dL/dtheta)                               # theta: the sampler's variables only

For a class-conditional model (ddss_tf.guidance) the step also draws the batch's labels by
the same key, runs the chain on the model guided at the search's scale for those labels and
takes the per-class KID loss (the global batch's features and labels all-gathered); a layer
with coefficients across scales (guidance_scales) runs each step at a scale drawn from its
range by the same key (the same on every replica).

With the LD3 objective (search.ld3) the step instead draws a batch of fixed teacher
pairs (x_T, phi(teacher x0)) by the same key, starts the sampler from x_T plus each pair's
trained offset (in a ball), and L is the mean squared feature distance to the teacher;
theta is then the time logits and the offsets. With "kid_teacher" it draws such pairs too
and starts from their x_T (no offsets): L is the KID loss plus teacher_weight times
that distance.

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
from ddss_tf.search import ld3
from ddss_tf.metrics import mmd

__all__ = ["Trainer"]


def _is_tpu(strategy):
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


class Trainer:
    """Holds the sampler, the optimiser and the compiled step functions of one search.

    Args:
      layer: a learnable sampler layer (built inside `strategy.scope()`).
      extractor: differentiable images -> features [B, d].
      real_features: float32 [N, d] reference features (linear kernel: only their mean is used).
      strategy: the tf.distribute strategy the layer's variables live in.
      cfg: the SearchConfig (kernel, batch_size, learning_rate, grad_clip, seed, xla,
        precision).
      image_shape: (H, W, C) of one sample.
      teacher: for cfg.objective "ld3" or "kid_teacher", the search.ld3.TeacherPairs the
        teacher term matches; with "ld3" (real_features then unused) the step also trains
        one offset of x_T per pair (`offsets`; None otherwise).
      guidance: for a class-conditional model, its guidance.Guidance (the layer is
        then called under `guidance.bound` with each step's labels).
    """

    def __init__(self, layer, extractor, real_features, strategy, cfg, image_shape, teacher=None,
                 guidance=None):
        self.layer, self.strategy, self.cfg = layer, strategy, cfg
        self.extractor = precision.extractor(extractor, cfg.precision)
        step_denoiser = precision.denoiser(layer.denoiser, cfg.precision)
        self._denoising = (contextlib.nullcontext if step_denoiser is layer.denoiser
                           else lambda: layer.using_denoiser(step_denoiser))
        self._compiling = contextlib.nullcontext  # or layer.compiling_network (below)
        self.replicas = strategy.num_replicas_in_sync
        self.local_batch = cfg.batch_size // self.replicas
        self.image_shape = [int(s) for s in image_shape]
        self.guidance = guidance
        if guidance is not None:
            if step_denoiser is not layer.denoiser or teacher is not None:
                raise ValueError("a guided search runs in float32 with the KID objective")
            real, self.real_labels = (tf.constant(v) for v in guidance.reference(real_features,
                                                                                 cfg.kernel))
            self.real = real
        else:
            real = tf.constant(real_features, tf.float32)
            self.real = tf.reduce_mean(real, 0, keepdims=True) if cfg.kernel == "linear" else real
        self.teacher, self.offsets = teacher, None
        with strategy.scope():
            self.variables = list(layer.trainable_variables)
            if teacher is not None:
                self.pair_x_T = tf.constant(teacher.x_T)
                self.pair_features = tf.constant(teacher.features)
            if teacher is not None and cfg.objective == "ld3":
                self.radius = ld3.radius(cfg.ld3_radius, self.image_shape)
                self.offsets = tf.Variable(tf.zeros_like(self.pair_x_T), name="ld3_offsets")
                self.variables.append(self.offsets)
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
            self._grads = tf.function(self._grads_fn,
                                      jit_compile=bool(cfg.xla) and not layer.looped)
            self._compute = tf.function(self._replica_step)
        else:
            # The all-gather is a synchronisation point, which a nested tf.function inside
            # strategy.run cannot hold; DESIGN section 7: jit_compile on the function that
            # calls strategy.run fails, and XLA with two replicas on logical CPUs cannot
            # read the variables. (On TPU the whole replica function is compiled anyway.)
            self._grads = self._grads_fn
            self._compute = tf.function(
                lambda step: strategy.run(self._replica_step, args=(step,)))
        self._apply = tf.function(self._apply_fn)

    @property
    def compiles_network_alone(self):
        """True when the step XLA-compiles the network call on its own (layer.compiling_network)
        rather than the whole step: a looped chain with cfg.xla on one device, non-TPU."""
        return self._compiling is not contextlib.nullcontext

    def _real_batch(self, key):
        if self.cfg.kernel == "linear":
            return self.real
        idx = tf.random.stateless_uniform([self.local_batch], key, 0, tf.shape(self.real)[0], tf.int32)
        return tf.gather(self.real, idx)

    def _replica_step(self, step):
        ctx = tf.distribute.get_replica_context()
        shape = [self.local_batch] + self.image_shape
        x_T, z, k_real = noise.step_noise(self.cfg.seed, step, ctx.replica_id_in_sync_group,
                                          self.layer.num_steps, shape)
        fold_in = tf.random.experimental.stateless_fold_in
        if self.teacher is not None:  # the step's pairs: LD3's keyed like a real batch
            key = k_real if self.offsets is not None else fold_in(k_real, 2)
            pairs = tf.random.stateless_uniform([self.local_batch], key, 0,
                                                tf.shape(self.pair_x_T)[0], tf.int32)
            real = None if self.offsets is not None else self._real_batch(k_real)
            return self._grads(x_T, z, real, pairs=pairs)
        if self.guidance is not None:
            labels = self.guidance.labels(fold_in(k_real, 1), self.local_batch)
            # The step's scale: keyed on the step alone, so every replica runs the same one.
            scale = self.guidance.step_scale(self.layer, noise.step_key(self.cfg.seed, step))
            return self._grads(x_T, z, self.real, (labels, scale))
        return self._grads(x_T, z, self._real_batch(k_real))

    def _grads_fn(self, x_T, noise, target, condition=None, pairs=None):
        """(global loss, global grad norm, all-reduced grads) on one replica. target: the real
        features of the KID loss (None: LD3, no KID term); condition: (the batch's labels,
        the step's guidance scale) of a guided search; pairs: the indices of the step's
        teacher pairs, whose x_T replace x_T."""
        ctx = tf.distribute.get_replica_context()
        variables = self.variables
        with tf.GradientTape() as tape, self._denoising(), self._compiling():
            if condition is not None:
                labels, scale = condition
                with self.guidance.bound(self.layer, labels, scale):
                    feats = self.extractor(self.layer(x_T, noise))
                if self.replicas > 1:  # the global batch's loss on every replica (as mmd's)
                    feats, labels = ctx.all_gather(feats, 0), ctx.all_gather(labels, 0)
                loss = self.guidance.loss(feats, labels, target, self.real_labels,
                                          self.cfg.kernel) / self.replicas
            else:
                if pairs is not None:
                    x_T = tf.gather(self.pair_x_T, pairs)
                if self.offsets is not None:
                    x_T += ld3.project_to_ball(tf.gather(self.offsets, pairs), self.radius)
                feats = self.extractor(self.layer(x_T, noise))
                loss = 0.0
                if target is not None:
                    loss = self._kid_loss(feats, target)
                if pairs is not None:
                    weight = 1.0 if self.offsets is not None else self.cfg.teacher_weight
                    # / replicas: the all-reduced sum is the global batch's mean
                    loss += weight * ld3.soft_teacher_loss(
                        feats, tf.gather(self.pair_features, pairs)) / self.replicas
        grads = tape.gradient(loss, variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                 for g, v in zip(grads, variables)]
        if self.replicas > 1:
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            loss = ctx.all_reduce(tf.distribute.ReduceOp.SUM, loss)
        return loss, tf.linalg.global_norm(grads), grads

    def _kid_loss(self, feats, real):
        """The KID loss of the global batch (its 1/replicas share on each replica)."""
        if self.replicas > 1:
            return mmd.cross_replica_kid_loss(feats, real, self.cfg.kernel) / self.replicas
        return mmd.kid_loss(feats, real, self.cfg.kernel)

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
