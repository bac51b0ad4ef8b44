"""The paper's table on one model: training-free and learned samplers at several K.

    records = benchmark.run(BenchmarkConfig(), "bench")      # what `ddss_benchmark` does

Modules: `rows` (the catalogue of rows: a sampler each, and how its cells are scored),
`config` (BenchmarkConfig: which rows, K and samples), `cells` (run: every cell, cached) and
`tables` (table.md, results.json and the PNGs).

A row is one sampler (a `Row`: its layer at each K and how a cell is scored), a cell
one sampler at one K. A cell draws `num_samples` images on the evaluation seeds
(noise.EVAL_SEED: the same x_T for every sampler and every K) and scores them with
evaluation.Scorer: FID, KID +- SE and IS in the feature space the searches
optimise, and the held-out FID. Every finished cell is cached in workdir/cells/
under a key naming the model, the feature networks, the sample count and (for a
learned sampler) its coefficients, so an interrupted benchmark resumes where it
stopped and a changed input is recomputed.

Learned samplers come from search work directories named as `ddss_search` names
them (`SearchConfig.run_name()`) under `searches`: a finished search is loaded
from its coefficients.json, a missing or unfinished one is searched (or resumed)
there first with the template SearchConfig's settings. A finished search
there with other settings (bookkeeping aside) is refused with one line.

The row "training_data" (K = 0, column "data") scores `num_samples` of the reference
images themselves, drawn with replacement: a model that reproduced its training data
exactly would score this. FID is biased upwards at a finite sample count, so this is
FID's floor at that count, and the scale against which the samplers' distances are
read. (KID is unbiased, so its floor is 0; the row reports none: a sample that repeats
the reference set's own images breaks the estimator's independence and biases it low.)

A class-conditional model is benchmarked at one classifier-free guidance scale (the
template search's guidance_scale; ddss_tf.guidance): every row samples it guided at that
scale, sample i asking for label i mod C, and the records gain per-class FID / KID and the
held-out classifier's accuracy. The row "ggdm_pred_time_across" is one sampler searched
across `guidance_anchors` (shared by the benchmarks at each scale) and run at the
benchmark's scale; "ggdm_pred_time_across_warm" is the same started from the searches made
at each anchor (the row "ggdm_pred_time" there) and tuned across the range.

Outputs in workdir: table.md (the paper's shape, rows samplers, columns K,
"FID / IS" cells, then every metric), results.json (one record per cell),
fid_vs_k.png and samples.png (rows samplers, columns K, the same x_T
everywhere); for a conditional model also samples_by_label_k<K>.png (rows samplers,
columns the requested labels 0..C-1), written without matplotlib. The other PNGs need
matplotlib (`pip install "ddss_tf[plots]"`).
"""

from ddss_tf.benchmark.cells import run
from ddss_tf.benchmark.config import BenchmarkConfig
from ddss_tf.benchmark.rows import (FLOW_ROWS, WARM_TUNE, LearnedRow, Row, default_samplers,
                                    sampler_names)
from ddss_tf.benchmark.tables import (CONDITIONAL_KEYS, RECORD_KEYS, cost_table, metrics_table,
                                      paper_table, seed_summaries)

__all__ = ["BenchmarkConfig", "sampler_names", "default_samplers", "FLOW_ROWS", "run",
           "paper_table", "metrics_table", "cost_table", "seed_summaries", "RECORD_KEYS",
           "CONDITIONAL_KEYS", "Row",
           "LearnedRow", "WARM_TUNE"]
