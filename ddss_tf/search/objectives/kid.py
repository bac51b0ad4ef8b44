"""KID: DDSS's objective (Watson et al. 2022, Sec. 3.1), the kernel MMD between the features
of the chain's samples and of the real data (`metrics.mmd.kid_loss`):

    L = 1/(n(n-1)) sum_{i != j} k(phi_i, phi_j) - 2/(n m) sum_{i,j} k(phi_i, psi_j)

over the global batch (all-gathered across replicas, differentiated as L / replicas). On a
class-conditional model searched under classifier-free guidance (ddss_tf.guidance) the
step draws its labels from the data's label frequencies, runs the chain on the model guided
at the step's scale for them, and L is the per-class KID loss
(`metrics.conditional.per_class_kid_loss`), so no class is traded for another.
"""

import tensorflow as tf

from ddss_tf import noise
from ddss_tf.metrics import conditional, mmd
from ddss_tf.search.objectives import base

__all__ = ["KID", "KIDLoss", "ClassKIDLoss", "kid_term"]


def kid_term(features, real, kernel, replicas):
    """The replica's share of the global batch's KID loss against `real` (what
    `mmd.reference_batch` gives)."""
    if replicas > 1:
        return mmd.cross_replica_kid_loss(features, real, kernel) / replicas
    return mmd.kid_loss(features, real, kernel)


class KID(base.Objective):
    name = "kid"
    summary = "DDSS: KID to the data, through the chain"
    guided = True

    def recipe(self, num_steps):
        # Above FEW_STEPS (where KID alone is the default) the start is near the best the model
        # does and a batch of 128 gives a KID gradient of mostly noise: twice the batch. From
        # UniPC at K = 10, 200 steps of it took FID on 10,000 samples from 0.403 to 0.358,
        # kept at step 100 (one seed; the variant row ggdm_pred_time_unipc_k10); the recipe
        # runs 100, half the network evaluations of the recipe before it (400 steps of 128).
        few = num_steps <= base.FEW_STEPS
        return base.ddss_recipe(num_steps, batch_size=128 if few else 256)

    def loss(self, cfg, evaluator, replicas, log):
        if evaluator.guidance is not None:
            return ClassKIDLoss(evaluator.guidance, evaluator.reference.features, cfg.kernel,
                                replicas)
        return KIDLoss(evaluator.reference.features, cfg.kernel, replicas)


class KIDLoss(base.Loss):
    """The KID loss in the loss's feature space (real_features [m, d])."""

    def __init__(self, real_features, kernel, replicas=1):
        super().__init__(replicas)
        self.kernel = kernel
        self.real = mmd.loss_reference(real_features, kernel)

    def inputs(self, key, n, step):
        return (mmd.reference_batch(self.real, self.kernel, key, n),)

    def __call__(self, features, x_T, inputs):
        (real,) = inputs
        return kid_term(features(x_T), real, self.kernel, self.replicas)


class ClassKIDLoss(base.Loss):
    """The per-class KID loss of a guided search (guidance: its `guidance.Guidance`)."""

    guided = True

    def __init__(self, guidance, real_features, kernel, replicas=1):
        super().__init__(replicas)
        self.guidance, self.kernel = guidance, kernel
        self.real, self.real_labels = conditional.class_loss_reference(
            real_features, guidance.real_labels, kernel)

    def build(self, layer, seed):
        self.layer, self.seed = layer, seed

    def inputs(self, key, n, step):
        labels = self.guidance.labels(tf.random.experimental.stateless_fold_in(key, 1), n)
        # The step's scale: keyed on the step alone, so every replica runs the same one.
        scale = self.guidance.step_scale(self.layer, noise.step_key(self.seed, step))
        return self.real, labels, scale

    def __call__(self, features, x_T, inputs):
        real, labels, scale = inputs
        with self.guidance.bound(self.layer, labels, scale):
            feats = features(x_T)
        if self.replicas > 1:  # the global batch's loss on every replica (as mmd's)
            ctx = tf.distribute.get_replica_context()
            feats, labels = ctx.all_gather(feats, 0), ctx.all_gather(labels, 0)
        return conditional.per_class_kid_loss(feats, labels, real, self.real_labels,
                                              self.guidance.num_classes,
                                              self.kernel) / self.replicas
