"""What the objectives that match a many-step teacher share (LD3, KID + teacher): the teacher
pairs prepared before training (search.teacher), their settings, cost and draws."""

import tensorflow as tf

from ddss_tf.search import teacher as teacher_lib
from ddss_tf.search.objectives import base

__all__ = ["TeacherObjective", "draw_pairs"]


class TeacherObjective(base.Objective):
    """An objective that trains on `ld3_pairs` (x_T, teacher x0) pairs of a `teacher_steps`-step
    DPM-Solver++(2M) teacher."""

    def validate(self, cfg):
        for name in ("teacher_steps", "ld3_pairs"):
            if int(getattr(cfg, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")

    def extra_num_steps(self, cfg):
        return (cfg.teacher_steps,)

    def network_evaluations(self, cfg):
        return cfg.ld3_pairs * cfg.teacher_steps

    def cost_text(self, cfg):
        return f"{cfg.ld3_pairs} x {cfg.teacher_steps} for the teacher"

    def pairs(self, cfg, evaluator, log):
        """The search's TeacherPairs (drawn once, before training)."""
        log(f"teacher: DPM-Solver++(2M) with {cfg.teacher_steps} steps on {cfg.ld3_pairs} "
            "x_T ...")
        return teacher_lib.teacher_pairs(evaluator.denoiser, evaluator.extractor,
                                         cfg.ld3_pairs, cfg.teacher_steps,
                                         evaluator.image_shape, clip=cfg.clip_samples)


def draw_pairs(key, n, pairs):
    """n indices into the teacher pairs, drawn with the stateless key."""
    return tf.random.stateless_uniform([n], key, 0, tf.shape(pairs.x_T)[0], tf.int32)
