"""KID with a control variate (beyond the paper; issue 34): DDSS's linear-kernel KID, whose
batch estimate of the samples' feature mean is corrected by the start sampler's on the same
noise.

Near a good start (a fine-tune of a screened solver above K = 5) the linear KID gradient

    dL/dtheta = 2 (m_theta - mu_r)^T dm_theta/dtheta,   m_theta = mean_b phi(sampler(x_T_b, z_b))

is mostly noise: the batch mean m_theta scatters by sqrt(tr Cov(phi) / n) around its
expectation, more than that expectation differs from the data's mean mu_r. The start sampler
(the search's coefficients before training, frozen) run on the step's own x_T and noise gives
m_0, which scatters with m_theta (the two chains differ little), and over the steps the mean
M_0 of every m_0 drawn so far estimates the start's true feature mean on ever more samples
(n per step). The corrected estimate and the loss are

    mu_hat = M_0 + (m_theta - m_0),     L = || mu_hat - mu_r ||^2,

whose gradient is 2 (mu_hat - mu_r)^T dm_theta/dtheta: the same direction in expectation,
with the scatter of m_theta - m_0 in place of m_theta's. At the first step mu_hat = m_theta.
L is the squared distance of the means itself (the linear KID loss is that minus ||mu_r||^2,
with an unbiased within term). Costs one more chain per sample, forward only (its network
evaluations are counted). M_0 (its sum and count) is checkpointed with the search.
"""

import tensorflow as tf

from ddss_tf import samplers
from ddss_tf.metrics import mmd
from ddss_tf.search.objectives import base, kid

__all__ = ["KIDControlVariate", "ControlVariateKIDLoss"]


class KIDControlVariate(kid.KID):
    name = "kid_cv"
    summary = ("DDSS's linear KID, its batch mean corrected by the start's on the same noise "
               "(a control variate)")
    guided = False

    def recipe(self, num_steps):
        # The DDSS recipe with KID's batch of 128 at every K: the control variate takes out
        # most of the batch mean's scatter, which KID doubled its batch against above K = 5.
        # At K = 10 batch 128 took UniPC quadratic's 0.403 / 0.113 (FID / held-out FID, 10,000
        # samples) to 0.340 +- 0.010 / 0.097 +- 0.003 over three training seeds, each kept by
        # paired selection on 5,000 validation samples; batch 256 (seed 0) reached 0.350 /
        # 0.110 at its last step, at twice the network evaluations (docs/ddss_search.md, "How
        # the defaults were chosen").
        return base.ddss_recipe(num_steps)

    def validate(self, cfg):
        if cfg.kernel != "linear":
            raise ValueError(f"objective kid_cv corrects the features' mean, which is all the "
                             f"linear kernel compares; got kernel {cfg.kernel!r} (accepted: "
                             "linear; --objective=kid takes the cubic kernel)")

    def chains_per_sample(self, cfg):
        return 2

    def label(self, cfg, sampler_label):
        return sampler_label + " (KID, control variate)"

    def loss(self, cfg, evaluator, replicas, log):
        return ControlVariateKIDLoss(evaluator.reference.features, replicas)


class ControlVariateKIDLoss(base.Loss):
    """L = ||M_0 + m_theta - m_0 - mu_r||^2 over the global batch (module docstring);
    real_features [m, d]."""

    def __init__(self, real_features, replicas=1):
        super().__init__(replicas)
        self.real = mmd.loss_reference(real_features, "linear")[0]  # mu_r [d]

    def build(self, layer, seed):
        # The start: built before any checkpoint is restored, so a resumed search keeps it.
        self.start = samplers.forward_copy(layer)
        self.start.trainable = False
        dim = int(self.real.shape[0])
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA  # every replica adds the same
        self.start_sum = tf.Variable(tf.zeros([dim]), trainable=False, aggregation=first,
                                     name="kid_cv_start_sum")
        self.start_count = tf.Variable(0.0, trainable=False, aggregation=first,
                                       name="kid_cv_start_count")

    def checkpointed(self):
        return {"kid_cv_start_sum": self.start_sum, "kid_cv_start_count": self.start_count}

    def start_mean(self):
        """M_0: the start's mean features over every batch drawn so far ([d])."""
        return self.start_sum / tf.maximum(self.start_count, 1.0)

    def _global_mean(self, feats):
        mean = tf.reduce_mean(feats, 0)
        if self.replicas > 1:  # equal local batches: the mean of the replicas' means
            ctx = tf.distribute.get_replica_context()
            mean = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(mean)) / \
                self.replicas
        return mean

    def __call__(self, features, x_T, inputs):
        feats = features(x_T)
        local = tf.reduce_mean(feats, 0)
        m_theta = tf.stop_gradient(self._global_mean(feats))
        m_0 = self._global_mean(features(x_T, frozen=self.start))
        n = tf.cast(tf.shape(feats)[0] * self.replicas, tf.float32)
        self.start_sum.assign_add(m_0 * n)
        self.start_count.assign_add(n)
        gap = tf.stop_gradient(self.start_mean() + m_theta - m_0 - self.real)
        # The replica's share: the value sums to ||gap||^2 over the replicas, the gradient to
        # 2 gap^T dm_theta/dtheta (m_theta is the mean of the replicas' local means).
        return (tf.reduce_sum(gap ** 2)
                + 2.0 * tf.reduce_sum(gap * (local - tf.stop_gradient(local)))) / self.replicas
