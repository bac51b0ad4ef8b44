"""Evaluate samplers: sample on fixed seeds, score, and compare with baselines and a reference.

Beside the training loop, not inside it: the search (periodic and final
evaluation) and the benchmark both use it, and it knows nothing of training.

    ev = evaluation.Evaluator(cfg)                  # the model, real data, feature networks
    scores, images = ev.sample_and_score(layer, 2000, "DDIM K=10")   # FID, KID, IS, held-out FID
    ev.baselines(10, 2000, cache="baselines.json")  # DDPM / DDIM strides at K = 10, cached
    ev.reference_scores(2000)                       # DDPM with all T steps, cached per model
    evaluation.record("DDIM", 10, scores, role="baseline")  # one results.json record

Modules: `draws` (samples on the evaluation seeds, `noise.EVAL_SEED`), `scoring` (the
Scorer and the feature networks by name), `evaluator` (the Evaluator: what a config
names, resolved once, with the cached baselines and reference), `records` (records
tagged by role, and their tables) and `plots` (FID against K, sample grids).
"""

from ddss_tf.evaluation.draws import BATCH_SIZE, EVAL_SEED, grid_images, sample
from ddss_tf.evaluation.evaluator import (BASELINES, FLOW_BASELINES, REFERENCES, Evaluator,
                                         baselines_for, read_cache)
from ddss_tf.evaluation.records import ROLES, log_scores, markdown_table, record
from ddss_tf.evaluation.scoring import SCORER_VERSION, Scorer, checked_scores, load_extractor

__all__ = ["BATCH_SIZE", "EVAL_SEED", "grid_images", "sample", "BASELINES", "FLOW_BASELINES",
           "REFERENCES", "baselines_for", "Evaluator", "read_cache", "ROLES", "log_scores",
           "markdown_table", "record", "SCORER_VERSION", "Scorer", "checked_scores",
           "load_extractor"]
