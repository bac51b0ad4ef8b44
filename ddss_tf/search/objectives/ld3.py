"""LD3 (Tong et al., ICLR 2025): learn only a training-free solver's K query times against a
many-step teacher from the same x_T.

A learned-schedule competitor to DDSS. LD3 keeps a training-free solver (an ODE solver of
`samplers.solver_names()`) and learns where it queries the network: its K times (the +TIME
logits, `samplers.times`), by matching the teacher (search.teacher). Its "soft teacher"
relaxation lets the student match the teacher's output for any x'_T in a small ball around
x_T, so a few-step solver need not spend its steps on matching the teacher exactly:

    loss = mean_b || phi(student(x'_T[b])) - phi(teacher(x_T[b])) ||^2,
    x'_T[b] = x_T[b] + project_to_ball(offset[b], radius),  radius = r sqrt(H W C)

over the fixed `ld3_pairs` pairs, one offset per pair trained with the times. sqrt(H W C)
is the typical norm of x_T ~ N(0, I), so r (`ld3_radius`) is the ball's radius relative to it.
"""

import numpy as np
import tensorflow as tf

from ddss_tf import samplers
from ddss_tf.search import teacher as teacher_lib
from ddss_tf.search.objectives import base, teacher_base

__all__ = ["LD3", "LD3Loss", "radius", "project_to_ball"]


def radius(r, image_shape):
    """The ball's radius: r times sqrt(H W C), the typical norm of x_T ~ N(0, I)."""
    return float(r) * float(np.sqrt(np.prod(image_shape)))


def project_to_ball(offsets, radius_):
    """offsets [B, H, W, C], each scaled into the L2 ball of radius `radius_` (unchanged inside)."""
    return tf.clip_by_norm(offsets, radius_, axes=[1, 2, 3])


class LD3(teacher_base.TeacherObjective):
    name = "ld3"
    summary = ("LD3: the solver's times only, against a many-step teacher from the same x_T "
               "(ddss_tf.search.objectives.ld3)")

    def families(self):
        return samplers.solver_names()

    def recipe(self, num_steps):
        return dict(super().recipe(num_steps), train_steps=400, learning_rate=1e-2)

    def default_select(self):
        """The last step's coefficients, as published."""
        return "last"

    def validate(self, cfg):
        super().validate(cfg)
        if not cfg.ld3_radius >= 0:
            raise ValueError(f"ld3_radius must be >= 0 (0: the plain teacher), got "
                             f"{cfg.ld3_radius}")

    def check_family(self, cfg, others):
        if cfg.family not in self.families() or not cfg.time:
            raise ValueError(f"objective ld3 learns the times (time=True) of "
                             f"{' or '.join(self.families())}; got family {cfg.family!r}, "
                             f"time={cfg.time}")

    def label(self, cfg, sampler_label):
        return f"LD3 {samplers.label(cfg.family)}"

    def loss(self, cfg, evaluator, replicas, log):
        return LD3Loss(self.pairs(cfg, evaluator, log),
                       radius(cfg.ld3_radius, evaluator.image_shape), replicas)


class LD3Loss(base.Loss):
    """The soft teacher's loss on `pairs` (search.teacher.TeacherPairs), with one trained
    offset of x_T per pair in a ball of radius `radius_`."""

    def __init__(self, pairs, radius_, replicas=1):
        super().__init__(replicas)
        self.pairs, self.radius = pairs, radius_

    def build(self, layer, seed):
        self.pair_x_T = tf.constant(self.pairs.x_T)
        self.pair_features = tf.constant(self.pairs.features)
        self.offsets = tf.Variable(tf.zeros_like(self.pair_x_T), name="ld3_offsets")
        self.variables = [self.offsets]

    def checkpointed(self):
        return {"ld3_offsets": self.offsets}

    def inputs(self, key, n, step):
        return (teacher_base.draw_pairs(key, n, self.pairs),)

    def __call__(self, features, x_T, inputs):
        (pairs,) = inputs  # the step's x_T is not used: the chain starts from the pairs'
        x_T = tf.gather(self.pair_x_T, pairs)
        x_T += project_to_ball(tf.gather(self.offsets, pairs), self.radius)
        # / replicas: the all-reduced sum is the global batch's mean
        return teacher_lib.distance(features(x_T),
                                    tf.gather(self.pair_features, pairs)) / self.replicas
