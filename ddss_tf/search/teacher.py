"""LD3 (Tong et al., ICLR 2025) as a search objective: learn only a solver's K query times;
and its teacher term added to DDSS's KID ("kid_teacher").

A learned-schedule competitor to DDSS. LD3 keeps a training-free solver
(DPM-Solver++(2M), UniPC) and learns where it queries the network: its K times (the
+TIME logits, `samplers.times`), by matching a many-step teacher that starts from the
same x_T. Its "soft teacher" relaxation lets the student match the teacher's output
for any x'_T in a small ball around x_T, so a few-step solver need not spend its steps
on matching the teacher exactly:

    loss = mean_b || phi(student(x'_T[b])) - phi(teacher(x_T[b])) ||^2,
    x'_T[b] = x_T[b] + project_to_ball(offset[b], radius),  radius = r sqrt(H W C)

over a fixed set of `ld3_pairs` (x_T, teacher x0) pairs, offsets trained with the
times. phi is the feature network the search already uses (LD3 uses LPIPS, whose
weights cannot be fetched here; the digits classifier's features are the space the
KID loss and the FID are measured in). sqrt(H W C) is the typical norm of x_T ~ N(0, I),
so r is the ball's radius relative to it.

The teacher is DPM-Solver++(2M) with `teacher_steps` steps on the same model: at 100
steps it is the probability-flow ODE's solution to within the samplers' differences.

Objective "kid_teacher" (beyond both papers; issue 14) learns a DDSS family with

    loss = KID loss(phi(student(x_T)))
           + teacher_weight * mean_b || phi(student(x_T[b])) - phi(teacher(x_T[b])) ||^2

on batches of the same fixed pairs, without offsets: KID pulls the samples' features
towards the data's, the teacher term keeps each sample near the model's own answer
from its x_T (the KID loss alone can trade what the held-out feature space sees for
the features it is measured in).
"""

import collections

import numpy as np
import tensorflow as tf

from ddss_tf import noise, samplers
from ddss_tf.evaluation import draws

__all__ = ["OBJECTIVES", "TEACHER_OBJECTIVES", "FAMILIES", "TEACHER_SEED", "TeacherPairs",
           "teacher_pairs", "project_to_ball", "soft_teacher_loss", "radius"]

# What a search minimises: KID to the data (DDSS), the distance to a teacher (LD3), or both.
OBJECTIVES = ("kid", "ld3", "kid_teacher")
# The objectives that draw teacher pairs.
TEACHER_OBJECTIVES = ("ld3", "kid_teacher")
# The families LD3 learns the times of: the training-free ODE solvers.
FAMILIES = ("dpm_solver_pp_2m", "unipc")
# The teacher's x_T: a seed of its own, never an evaluation's or a training step's.
TEACHER_SEED = 3_000_017
TEACHER_FAMILY = "dpm_solver_pp_2m"

TeacherPairs = collections.namedtuple("TeacherPairs", ["x_T", "x0", "features"])
TeacherPairs.__doc__ = """The LD3 training set: x_T [N, H, W, C], the teacher's x0 from it, and
phi(x0) [N, d], float32 numpy."""


def teacher_pairs(denoiser, extractor, num_pairs, teacher_steps, image_shape,
                  seed=TEACHER_SEED):
    """TeacherPairs of `num_pairs` x_T (noise.draw_batch(seed, b), in evaluation-sized
    batches) and the teacher's samples from them."""
    teacher = samplers.create(TEACHER_FAMILY, denoiser, num_steps=teacher_steps, remat=False)
    x0 = draws.sample(teacher, num_pairs, image_shape, seed=seed)
    batch = min(draws.BATCH_SIZE, num_pairs)
    x_T = np.concatenate([noise.draw_batch(seed, b, 1, [batch, *image_shape])[0].numpy()
                          for b in range(-(-num_pairs // batch))])[:num_pairs]
    features = np.concatenate([np.asarray(extractor(x0[i:i + batch]))
                               for i in range(0, num_pairs, batch)])
    return TeacherPairs(x_T.astype(np.float32), x0.astype(np.float32),
                        features.astype(np.float32))


def radius(r, image_shape):
    """The ball's radius: r times sqrt(H W C), the typical norm of x_T ~ N(0, I)."""
    return float(r) * float(np.sqrt(np.prod(image_shape)))


def project_to_ball(offsets, radius_):
    """offsets [B, H, W, C], each scaled into the L2 ball of radius `radius_` (unchanged inside)."""
    return tf.clip_by_norm(offsets, radius_, axes=[1, 2, 3])


def soft_teacher_loss(student_features, teacher_features):
    """Mean over the batch of the squared L2 distance between the two features [B, d]."""
    diff = tf.cast(student_features, tf.float32) - tf.cast(teacher_features, tf.float32)
    return tf.reduce_mean(tf.reduce_sum(tf.square(diff), axis=-1))
