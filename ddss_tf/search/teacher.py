"""A many-step teacher's answers from fixed x_T: the pairs the teacher-matching objectives
(LD3, KID + teacher: search.objectives) train on.

The teacher is DPM-Solver++(2M) with `teacher_steps` steps on the search's model: at 100
steps it is the probability-flow ODE's solution to within the samplers' differences. A
pair is an x_T and the teacher's sample from it, with its features phi(x0) in the
feature space the search already uses (LD3 uses LPIPS, whose weights cannot be fetched
here; the digits classifier's features are the space the KID loss and the FID are
measured in). The student is compared with the teacher by

    distance = mean_b || phi(student(x_T[b])) - phi(teacher(x_T[b])) ||^2.
"""

import collections

import numpy as np
import tensorflow as tf

from ddss_tf import noise, samplers
from ddss_tf.evaluation import draws

__all__ = ["TEACHER_SEED", "TEACHER_FAMILY", "TeacherPairs", "teacher_pairs", "distance"]

# The teacher's x_T: a seed of its own, never an evaluation's or a training step's.
TEACHER_SEED = 3_000_017
TEACHER_FAMILY = "dpm_solver_pp_2m"

TeacherPairs = collections.namedtuple("TeacherPairs", ["x_T", "x0", "features"])
TeacherPairs.__doc__ = """The teacher's training set: x_T [N, H, W, C], the teacher's x0 from
it, and phi(x0) [N, d], float32 numpy."""


def teacher_pairs(denoiser, extractor, num_pairs, teacher_steps, image_shape,
                  seed=TEACHER_SEED, clip=False):
    """TeacherPairs of `num_pairs` x_T (noise.draw_batch(seed, b), in evaluation-sized
    batches) and the teacher's samples from them (clipped to the extractor's data range with
    `clip`, as a search with clip_samples scores its own)."""
    teacher = samplers.create(TEACHER_FAMILY, denoiser, num_steps=teacher_steps, remat=False)
    x0 = draws.sample(teacher, num_pairs, image_shape, seed=seed)
    if clip:
        x0 = np.clip(x0, *extractor.data_range)
    batch = min(draws.BATCH_SIZE, num_pairs)
    x_T = np.concatenate([noise.draw_batch(seed, b, 1, [batch, *image_shape])[0].numpy()
                          for b in range(-(-num_pairs // batch))])[:num_pairs]
    features = np.concatenate([np.asarray(extractor(x0[i:i + batch]))
                               for i in range(0, num_pairs, batch)])
    return TeacherPairs(x_T.astype(np.float32), x0.astype(np.float32),
                        features.astype(np.float32))


def distance(student_features, teacher_features):
    """Mean over the batch of the squared L2 distance between the two features [B, d] (LD3's
    soft-teacher loss, Tong et al. 2025)."""
    diff = tf.cast(student_features, tf.float32) - tf.cast(teacher_features, tf.float32)
    return tf.reduce_mean(tf.reduce_sum(tf.square(diff), axis=-1))
