"""A search for a class-conditional model sampled with classifier-free guidance (issue 17).

What changes against an unconditional search, step by step (search.trainer):

    labels ~ the data's label frequencies, keyed on the step like its noise
    x_0 = sampler(x_T, z) on the model guided at w for those labels   (one network call per
                                                                        step on 2B images)
    L = per-class KID loss of phi(x_0) against the real features of each label

so the sampler learns the guided model's chain at the scale it will be served at, and cannot
trade one class's quality for another's (`metrics.conditional.per_class_kid_loss`, the
objective search.objectives.kid.ClassKIDLoss).

Across scales (beyond the paper): a layer built with guidance_scales=(w_1, ..., w_n) keeps
one copy of its coefficients per anchor scale and runs at the scale of the denoiser it is
given, interpolated between anchors (samplers.base). Its search draws each step's scale
(`step_scale`) as one of the anchors (half the steps, each anchor equally likely) or uniformly
from [w_1, w_n] (the other half), so one sampler learns the whole range and serves any scale
in it; the export accepts exactly that range (`scale_range`). The anchor draws matter: an
anchor's coefficients are the sampler's alone only at that scale, and with uniform draws
alone the outer ones (whose segment is drawn least and shared with the next anchor) drifted
to values that served their segment's inside and not the anchor itself (docs/guidance.md).
"""

import numpy as np
import tensorflow as tf

from ddss_tf import denoisers

__all__ = ["Guidance", "ANCHOR_PROBABILITY", "validation_scales"]

# The share of a search across scales' steps run at one of its anchors (the rest: uniform in
# their range).
ANCHOR_PROBABILITY = 0.5


def validation_scales(anchors):
    """The scales at which a search across `anchors` validates its coefficients (select =
    "best", on the mean FID over them): the anchors and the midpoint between each two
    neighbours, so the coefficients kept serve the range and not only the anchors (a start
    taken from searches made at each anchor is best there by construction)."""
    anchors = [float(w) for w in anchors]
    return tuple(sorted(anchors + [(a + b) / 2 for a, b in zip(anchors, anchors[1:])]))


class Guidance:
    """The conditional side of a search.

    Args:
      denoiser: the model's `denoisers.ConditionalDenoiser` (labels, not embeddings).
      scale: the classifier-free guidance scale w >= 0 (0: the plain conditional model).
      real_labels: int [N], the labels of the reference set the loss compares with (their
        frequencies are the distribution the training labels are drawn from).
      num_classes: C; labels are 0..C-1 (the model's null label is C).
    """

    def __init__(self, denoiser, scale, real_labels, num_classes):
        if not isinstance(denoiser, denoisers.ConditionalDenoiser):
            raise ValueError("guidance needs a conditional model (a ConditionalDenoiser), got "
                             f"{type(denoiser).__name__}")
        if denoiser.null_condition.shape.rank != 0:
            raise ValueError("guided searches take models conditioned on labels; this one takes "
                             "embeddings")
        scale = float(scale)
        if not scale >= 0:
            raise ValueError(f"guidance_scale must be a number >= 0, got {scale}")
        labels = np.asarray(real_labels).reshape(-1)
        if labels.size == 0 or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"the reference labels must lie in 0..{num_classes - 1}, got "
                             f"{'none' if labels.size == 0 else f'{labels.min()}..{labels.max()}'}")
        self.denoiser, self.scale, self.num_classes = denoiser, scale, int(num_classes)
        self.real_labels = labels.astype(np.int32)
        counts = np.bincount(self.real_labels, minlength=self.num_classes)
        # log 0 = -inf: a label absent from the data is never drawn.
        with np.errstate(divide="ignore"):
            self.log_frequencies = np.log(counts / counts.sum()).astype(np.float32)

    def labels(self, key, n):
        """n labels drawn from the data's label frequencies with a stateless key."""
        return tf.cast(tf.random.stateless_categorical(self.log_frequencies[None], n, key)[0],
                       tf.int32)

    def unbound(self):
        """The denoiser a guided search's layer is built on: the model's schedule and network,
        refusing to run outside `bound` (a call there would have no labels)."""
        return self.denoiser.unbound()

    def bound(self, layer, labels, scale=None):
        """Context: the layer's calls inside run on the model guided for `labels` (as many as
        the batch) at `scale` (default: this search's scale)."""
        return layer.using_denoiser(self.denoiser.guided(labels,
                                                         self.scale if scale is None else scale))

    def step_scale(self, layer, key):
        """The guidance scale of one search step: this search's scale, or for a layer with
        guidance_scales, with a stateless key, one of its anchors (probability
        ANCHOR_PROBABILITY, each equally likely) or else one drawn uniformly from their range."""
        anchors = getattr(layer, "guidance_scales", None)
        if anchors is None:
            return self.scale
        k_choice, k_anchor, k_uniform = tf.unstack(tf.random.experimental.stateless_split(key, 3))
        anchor = tf.gather(tf.constant(anchors, tf.float32),
                           tf.random.stateless_uniform([], k_anchor, 0, len(anchors), tf.int32))
        uniform = tf.random.stateless_uniform([], k_uniform, anchors[0], anchors[-1])
        return tf.where(tf.random.stateless_uniform([], k_choice) < ANCHOR_PROBABILITY,
                        anchor, uniform)

    def scale_range(self, layer):
        """(low, high): the guidance scales `layer` serves, its anchors' range or this
        search's scale alone."""
        anchors = getattr(layer, "guidance_scales", None)
        return (anchors[0], anchors[-1]) if anchors is not None else (self.scale, self.scale)
