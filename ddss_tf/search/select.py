"""Which coefficients a search keeps (SearchConfig.select).

    last     the last step's (the paper's)
    best     those of the start or of a periodic evaluation (every eval_every steps and the
             last) with the lowest FID on validation_samples validation samples
    paired   as best, but a candidate is kept only when it beats the *start* with confidence:
             the start and every candidate are sampled on the same validation x_T and noise,
             and in at least CONFIDENCE of the paired bootstrap resamples of those samples
             (`metrics.paired_fid_confidence`) its FID is below the start's. A search then never
             keeps a sampler that is worse than its start by the luck of one validation draw.

Validation samples come from noise.VALIDATION_SEED, never the evaluation's x_T, so the final
scores stay unbiased by the choice. A sampler across guidance scales is validated at several
scales (`guidance.validation_scales`): its FID is the mean over them, and a paired candidate must
beat the start at each. Everything kept (the coefficients, their FID and step, the start's
validation features) is a tf.Module checkpointed with the run, so a resumed search keeps it.
"""

import numpy as np
import tensorflow as tf

from ddss_tf import metrics, noise, summaries

__all__ = ["SELECTS", "CONFIDENCE", "RESAMPLES", "Kept", "Selection"]

SELECTS = ("last", "best", "paired")
CONFIDENCE = 0.95
RESAMPLES = 200


class Kept(tf.Module):
    """The kept coefficients: fid (the lowest validation FID kept, inf before any); step (its
    step, -1 before any); considered (the last step evaluated, -1 before any); values (copies
    of the layer's trainable variables at `step`); with `start_shape` [scales, n, d], also the
    start's validation features (`start_features`, paired selection)."""

    def __init__(self, layer, start_shape=None):
        super().__init__(name="best")
        self.fid = tf.Variable(float("inf"), dtype=tf.float64, trainable=False, name="fid")
        self.step = tf.Variable(-1, dtype=tf.int64, trainable=False, name="step")
        self.considered = tf.Variable(-1, dtype=tf.int64, trainable=False, name="considered")
        self.values = [tf.Variable(tf.convert_to_tensor(v), trainable=False, name=f"value_{i}")
                       for i, v in enumerate(layer.trainable_variables)]
        if start_shape is not None:
            self.start_features = tf.Variable(tf.zeros(start_shape, tf.float32),
                                              trainable=False, name="start_features")

    def consider(self, layer, step, fid):
        """Keep the layer's variables if `fid` (finite) is the lowest so far; True if kept."""
        self.considered.assign(step)
        if not fid < float(self.fid):  # NaN is never kept
            return False
        self.fid.assign(fid)
        self.step.assign(step)
        for kept, v in zip(self.values, layer.trainable_variables):
            kept.assign(tf.convert_to_tensor(v))
        return True

    def restore_into(self, layer):
        """Set the layer's variables to the kept ones (a no-op before any was kept)."""
        if int(self.step) >= 0:
            for kept, v in zip(self.values, layer.trainable_variables):
                v.assign(tf.convert_to_tensor(kept))


class Selection:
    """A search's choice of coefficients (select "best" or "paired"; None is made for "last").

    Args:
      cfg: the SearchConfig (select, validation_samples).
      layer: the sampler searched.
      evaluators: the evaluation.Evaluators it is validated with (one, or one per validation
        scale of a sampler across guidance scales).
      log: where the choice is reported.
    """

    def __init__(self, cfg, layer, evaluators, log):
        self.cfg, self.layer, self.evaluators, self.log = cfg, layer, list(evaluators), log
        shape = None
        if cfg.select == "paired":
            ev = self.evaluators[0]
            width = int(ev.extractor(np.zeros([2, *ev.image_shape], np.float32)).shape[-1])
            shape = [len(self.evaluators), cfg.validation_samples, width]
        self.kept = Kept(layer, shape)

    def validate(self, step):
        """Score the layer at `step` on the validation samples and keep it if it qualifies;
        returns the lowest validation FID kept so far."""
        fid, features = self._score(step)
        summaries.scalar("validation/fid", fid, step)
        if self.cfg.select == "paired" and features is not None:
            if step == 0:
                self.kept.start_features.assign(np.stack(features).astype(np.float32))
            elif fid < float(self.kept.fid):  # a candidate: it must beat the start
                confidence = min(self._confidence(f, s, ev) for f, s, ev in zip(
                    features, self.kept.start_features.numpy(), self.evaluators))
                summaries.scalar("validation/confidence", confidence, step)
                if not confidence >= CONFIDENCE:
                    self.log(f"select=paired: step {step}'s validation FID {fid:.4f} is below "
                             f"the kept {float(self.kept.fid):.4f}, but beats the start in "
                             f"only {confidence:.0%} of paired resamples (< {CONFIDENCE:.0%}): "
                             "not kept")
                    self.kept.considered.assign(step)
                    return float(self.kept.fid)
        self.kept.consider(self.layer, step, fid)
        return float(self.kept.fid)

    def _score(self, step):
        """(the mean validation FID over the evaluators, [features per evaluator] or None when
        a sample is not finite)."""
        fids, features = [], []
        for ev in self.evaluators:
            imgs = ev.sample(self.layer, self.cfg.validation_samples, seed=noise.VALIDATION_SEED)
            if not np.all(np.isfinite(imgs)):
                fids.append(np.nan)
                continue
            fid, feats = ev.scorer.fid(imgs)
            fids.append(fid)
            features.append(feats)
            if len(self.evaluators) > 1:
                summaries.scalar(f"validation/fid_w{ev.guidance.scale:g}", fids[-1], step)
        return float(np.mean(fids)), features if len(features) == len(self.evaluators) else None

    @staticmethod
    def _confidence(candidate, start, ev):
        return metrics.paired_fid_confidence(candidate, start, ev.reference.mean,
                                             ev.reference.cov, resamples=RESAMPLES)

    def restore(self):
        """Put the kept coefficients in the layer. Returns {step, validation_fid,
        validation_samples, select (and confidence, for paired)} of the kept ones, or None (no
        finite validation FID: the last step's are kept)."""
        step = int(self.kept.step)
        if step < 0:
            self.log(f"select={self.cfg.select}: no evaluation had a finite validation FID; "
                     "keeping the last step's coefficients")
            return None
        self.kept.restore_into(self.layer)
        fid = float(self.kept.fid)
        self.log(f"select={self.cfg.select}: keeping the coefficients of step {step} "
                 f"(validation FID {fid:.4f} on {self.cfg.validation_samples} samples)")
        kept = dict(step=step, validation_fid=fid, validation_samples=self.cfg.validation_samples,
                    select=self.cfg.select)
        if self.cfg.select == "paired":
            kept["confidence"] = CONFIDENCE
        return kept
