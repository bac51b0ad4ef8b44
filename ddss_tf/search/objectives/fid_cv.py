"""FID with a control variate (beyond the paper; issue 34): the Frechet distance in the loss's
feature space between the data and the sampler, its mean and covariance estimated with the
start sampler as a control variate on the same noise (kid_cv does this for the mean alone):

    mu_hat = M_0 + (m_theta - m_0),      C_hat = P(C_0 + (C_theta - C_c)),
    L = ||mu_hat - mu_r||^2 + Tr(C_hat) + Tr(C_r) - 2 Tr sqrt(R C_hat R),   R = C_r^(1/2)

m_theta, C_theta: the batch's feature mean and covariance (differentiated); m_0, C_c: the
start's on the same x_T and noise (forward only); M_0, C_0: the start's over every batch drawn
so far (checkpointed). P projects onto the positive semi-definite matrices (C_hat is a
difference of batch covariances, and its negative directions would let L fall by growing
them). At the first step C_hat is the batch's covariance and L the batch's FID.

The linear KID that kid_cv minimises compares the means only; FID compares the covariances
too, and at few steps most of the distance is there (at K = 3 on the bundled model, 2.86 of
the start's FID of 3.33 on 2,000 samples). Tr sqrt(R C_hat R) is the sum of the
square roots of the eigenvalues of R C_hat R; each gets a floor eps (a bounded gradient where
C_hat is near singular) that is subtracted again, so L never falls below the FID of C_hat.

Measured (one training seed each; docs/ddss_search.md): at K = 10 from UniPC quadratic, 100
steps of batch 128 at 3e-3 reached 0.362 / 0.105 (FID / held-out FID on 10,000 samples, the
last step) against the start's 0.403 / 0.113; kid_cv's three seeds reached 0.340 +- 0.010 /
0.097 +- 0.003. Runs on one replica (the covariance of the global batch would need every
replica's features).
"""

import numpy as np
import tensorflow as tf

from ddss_tf import samplers
from ddss_tf.metrics import scores
from ddss_tf.search.objectives import base, kid

__all__ = ["FIDControlVariate", "ControlVariateFIDLoss"]


class FIDControlVariate(kid.KID):
    name = "fid_cv"
    summary = ("FID in the loss's feature space, its mean and covariance corrected by the "
               "start's on the same noise (a control variate)")
    guided = False

    def recipe(self, num_steps):
        return base.ddss_recipe(num_steps)

    def validate(self, cfg):
        if cfg.kernel != "linear":
            raise ValueError(f"objective fid_cv compares the features' mean and covariance and "
                             f"takes no kernel; got kernel {cfg.kernel!r} (accepted: the "
                             "default, linear; --objective=kid takes the cubic kernel)")

    def chains_per_sample(self, cfg):
        return 2

    def label(self, cfg, sampler_label):
        return sampler_label + " (FID, control variate)"

    def loss(self, cfg, evaluator, replicas, log):
        if replicas != 1:
            raise ValueError(f"objective fid_cv runs on one replica, got {replicas} (its "
                             "covariance needs the whole batch's features; accepted on "
                             "several: kid, kid_cv, kid_teacher, ld3)")
        return ControlVariateFIDLoss(evaluator.reference.features)


def _cov(x, mean):
    centred = x - mean
    return tf.matmul(centred, centred, transpose_a=True) / tf.cast(tf.shape(x)[0] - 1, x.dtype)


def _psd(mat):
    """The nearest positive semi-definite matrix to the symmetric part of `mat`."""
    eig, vec = tf.linalg.eigh(0.5 * (mat + tf.transpose(mat)))
    return tf.matmul(vec * tf.maximum(eig, 0.0)[None, :], vec, transpose_b=True)


class ControlVariateFIDLoss(base.Loss):
    """The FID of the control-variate statistics (module docstring); real_features [m, d]."""

    def __init__(self, real_features):
        super().__init__(1)
        mu, cov = scores.feature_statistics(real_features, "real features")
        self.mu_r = tf.constant(mu, tf.float64)
        self.trace_r = float(np.trace(cov))
        self.root_r = tf.constant(scores.psd_sqrt(cov), tf.float64)

    def build(self, layer, seed):
        # The start: built before any checkpoint is restored, so a resumed search keeps it.
        self.start = samplers.forward_copy(layer)
        self.start.trainable = False
        dim = int(self.mu_r.shape[0])
        self.start_sum = tf.Variable(tf.zeros([dim], tf.float64), trainable=False,
                                     name="fid_cv_start_sum")
        self.start_outer = tf.Variable(tf.zeros([dim, dim], tf.float64), trainable=False,
                                       name="fid_cv_start_outer")
        self.start_count = tf.Variable(tf.constant(0.0, tf.float64), trainable=False,
                                       name="fid_cv_start_count")

    def checkpointed(self):
        return {"fid_cv_start_sum": self.start_sum, "fid_cv_start_outer": self.start_outer,
                "fid_cv_start_count": self.start_count}

    def start_statistics(self):
        """(M_0 [d], C_0 [d, d]): the start's feature mean and covariance over every batch
        drawn so far."""
        n = self.start_count
        mean = self.start_sum / tf.maximum(n, 1.0)
        outer = self.start_outer - n * mean[:, None] * mean[None, :]
        return mean, outer / tf.maximum(n - 1.0, 1.0)

    def __call__(self, features, x_T, inputs):
        f = tf.cast(features(x_T), tf.float64)
        f0 = tf.cast(features(x_T, frozen=self.start), tf.float64)
        self.start_sum.assign_add(tf.reduce_sum(f0, 0))
        self.start_outer.assign_add(tf.matmul(f0, f0, transpose_a=True))
        self.start_count.assign_add(tf.cast(tf.shape(f0)[0], tf.float64))
        mean_0, cov_0 = self.start_statistics()
        m, m0 = tf.reduce_mean(f, 0), tf.reduce_mean(f0, 0)
        mu = mean_0 + m - m0
        cov = _psd(cov_0 + _cov(f, m) - _cov(f0, m0))
        inner = tf.matmul(self.root_r, tf.matmul(cov, self.root_r))
        eig = tf.linalg.eigvalsh(0.5 * (inner + tf.transpose(inner)))
        eps = 1e-10 * tf.stop_gradient(tf.reduce_max(eig))
        trace_sqrt = tf.reduce_sum(tf.sqrt(tf.maximum(eig, 0.0) + eps) - tf.sqrt(eps))
        gap = mu - self.mu_r
        fid = (tf.reduce_sum(gap * gap) + tf.linalg.trace(cov) + self.trace_r
               - 2.0 * trace_sqrt)
        return tf.cast(fid, tf.float32)
