"""Measure a bundled digits model: 1000-step samples next to real digits, FIDs, the shipped cache.

    PYTHONPATH=. python tools/bundled_model_report.py [--num_samples=2000] [--model=digits_flow]

Writes, for --model=digits (the default; digits_flow: its own files)
  docs/images/digits_ddpm_samples.png       real training digits (top) | 1000-step ancestral samples
  docs/bundled_model_scores.json            FID / KID / IS / held-out FID of each sampler below
  ddss_tf/assets/digits_ddpm/reference/     the 1000-step scores `ddss_search` compares with
                                            (evaluation.Evaluator.reference_scores reads them; the file
                                            name hashes the model, sample count and features)
and prints a markdown table for docs/bundled_models.md. Samples use the evaluation seeds of
`ddss_search` (noise.EVAL_SEED), so the numbers are the ones its tables show; the samplers are the
model's baselines (`evaluation.baselines_for` its schedule) at K = 5, 10, 20.
"""

import os
import sys

from absl import app, flags

from ddss_tf import data, evaluation, files, images, pretrained
from ddss_tf.search import SearchConfig

flags.DEFINE_integer("num_samples", 2000, "Samples per sampler (ddss_search's final_samples).")
flags.DEFINE_enum("model", "digits", ["digits", "digits_flow"], "The bundled model measured.")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# --model: (sample grid, scores file), under docs/.
OUTPUTS = {"digits": ("images/digits_ddpm_samples.png", "bundled_model_scores.json"),
           "digits_flow": ("images/digits_flow_samples.png", "bundled_flow_scores.json")}


def main(argv):
    del argv
    n = FLAGS.num_samples
    grid_png, scores_json = OUTPUTS[FLAGS.model]
    ev = evaluation.Evaluator(SearchConfig(model=FLAGS.model), print)
    scores, ddpm_images = ev.score_reference(1000, n)
    name, key = ev.reference_file(1000, n)
    ref_dir = os.path.join(ROOT, "ddss_tf", "assets", pretrained.BUNDLED_DDPMS[FLAGS.model],
                           "reference")
    os.makedirs(ref_dir, exist_ok=True)
    files.write_json(os.path.join(ref_dir, name), dict(scores, key=key))

    records = [dict(sampler="DDPM", num_steps=1000, **scores)]
    heldout_real = data.load("digits", "heldout")
    records.append(dict(sampler="real held-out digits", num_steps=0, **ev.scorer(heldout_real)))
    for k in (5, 10, 20):
        for label, family, options in evaluation.baselines_for(ev.denoiser.schedule):
            layer = ev.baseline_layer(family, k, **options)
            s, _ = ev.sample_and_score(layer, n, f"{label} K={k}")
            records.append(dict(sampler=label, num_steps=k, **s))
    files.write_json(os.path.join(ROOT, "docs", scores_json), records)

    real = ev.real_images[:64]
    grid = images.labelled_rows([real, ddpm_images[:64]], ncols=16, scale=4)
    images.write_png(os.path.join(ROOT, "docs", grid_png), grid)

    print("| sampler | K | FID | KID (+- SE) | IS | held-out FID | N |\n|---|---|---|---|---|---|---|")
    for r in records:
        print(f"| {r['sampler']} | {r['num_steps']} | {r['fid']:.3f} | {r['kid']:.4f} +- "
              f"{r['kid_se']:.4f} | {r.get('is', float('nan')):.2f} | {r['heldout_fid']:.3f} | "
              f"{r['num_samples']} |")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    app.run(main)
