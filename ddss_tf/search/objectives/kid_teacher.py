"""KID + teacher (beyond both papers; issue 14): DDSS's KID loss plus LD3's teacher distance
on the same fixed pairs, without LD3's offsets:

    loss = KID loss(phi(student(x_T)))
           + teacher_weight * mean_b || phi(student(x_T[b])) - phi(teacher(x_T[b])) ||^2

KID pulls the samples' features towards the data's, the teacher term keeps each sample near
the model's own answer from its x_T (the KID loss alone can trade what the held-out feature
space sees for the features it is measured in). The chain starts from the step's pairs' x_T.
"""

import tensorflow as tf

from ddss_tf.metrics import mmd
from ddss_tf.search import teacher as teacher_lib
from ddss_tf.search.objectives import base, kid, teacher_base

__all__ = ["KIDTeacher", "KIDTeacherLoss"]


class KIDTeacher(teacher_base.TeacherObjective):
    name = "kid_teacher"
    summary = "DDSS's KID plus --teacher_weight times LD3's teacher distance"

    def validate(self, cfg):
        super().validate(cfg)
        if not cfg.teacher_weight >= 0:
            raise ValueError(f"teacher_weight must be >= 0 (0: the KID loss alone, on the "
                             f"pairs' x_T), got {cfg.teacher_weight}")

    def recipe(self, num_steps):
        return base.ddss_recipe(num_steps)

    def label(self, cfg, sampler_label):
        return sampler_label + " (KID + teacher)"

    def loss(self, cfg, evaluator, replicas, log):
        return KIDTeacherLoss(self.pairs(cfg, evaluator, log), evaluator.reference.features,
                              cfg.kernel, cfg.teacher_weight, replicas)


class KIDTeacherLoss(kid.KIDLoss):
    """KIDLoss on the pairs' x_T plus `weight` times the teacher distance."""

    def __init__(self, pairs, real_features, kernel, weight, replicas=1):
        super().__init__(real_features, kernel, replicas)
        self.pairs, self.weight = pairs, weight

    def build(self, layer, seed):
        self.pair_x_T = tf.constant(self.pairs.x_T)
        self.pair_features = tf.constant(self.pairs.features)

    def inputs(self, key, n, step):
        pairs = teacher_base.draw_pairs(tf.random.experimental.stateless_fold_in(key, 2), n,
                                        self.pairs)
        return mmd.reference_batch(self.real, self.kernel, key, n), pairs

    def __call__(self, features, x_T, inputs):
        real, pairs = inputs  # the step's x_T is not used: the chain starts from the pairs'
        feats = features(tf.gather(self.pair_x_T, pairs))
        loss = kid.kid_term(feats, real, self.kernel, self.replicas)
        # / replicas: the all-reduced sum is the global batch's mean
        return loss + self.weight * teacher_lib.distance(
            feats, tf.gather(self.pair_features, pairs)) / self.replicas
