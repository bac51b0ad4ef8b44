"""Baselines, the final comparison, and the files a finished search leaves behind."""

import hashlib
import json
import os

import numpy as np

from ddss_tf import export, files, images, metrics, pretrained
from ddss_tf.search import components, evaluation

__all__ = ["sample_and_score", "log_scores", "learned_label", "record", "baselines",
           "reference_scores", "reference_file", "score_reference", "finish", "markdown_table",
           "write_json_atomic", "read_cache", "checked_scores"]


# The old spelling of files.write_json (strict JSON, written atomically).
write_json_atomic = files.write_json


def read_cache(path, log):
    """A cached JSON score file, or None when there is none or it is damaged (truncated,
    invalid, non-finite): then it is named in the log and recomputed."""
    if not os.path.exists(path):
        return None
    try:
        value = files.read_json(path, "cache file")
    except ValueError as e:
        log(f"  ignoring a damaged cache: {e}; recomputing it")
        return None
    return value if isinstance(value, dict) else None


def sample_and_score(setup, layer, num_samples, label, log, show_progress=False):
    """(scores, images) of num_samples samples of `layer` on the evaluation seeds; logs a line."""
    imgs = evaluation.sample(layer, num_samples, setup.image_shape, show_progress=show_progress,
                             desc=label)
    if not np.all(np.isfinite(imgs)):
        raise FloatingPointError(f"{label}: its samples hold NaN / Inf (the model or the "
                                 "sampler's coefficients); nothing scored or written")
    scores = checked_scores(setup.scorer(imgs), label)
    log_scores(label, scores, log)
    return scores, imgs


def checked_scores(scores, label):
    """scores, after refusing non-finite ones (FloatingPointError naming the sampler): a NaN
    never reaches a table, a cache or results.json. KID's standard error is undefined (None)
    with a single block."""
    bad = [k for k in ("fid", "kid", "heldout_fid", "is")
           if scores.get(k) is not None and not np.isfinite(scores[k])]
    if bad:
        raise FloatingPointError(f"{label}: {', '.join(bad)} not finite "
                                 f"({', '.join(f'{k} = {scores[k]}' for k in bad)}); its samples "
                                 "hold NaN / Inf (the model or the sampler's coefficients)")
    se = scores.get("kid_se")
    return dict(scores, kid_se=None) if se is not None and not np.isfinite(se) else scores


def log_scores(label, scores, log, note=""):
    """One line: label, FID, KID +- SE, held-out FID."""
    log(f"  {label:<28} FID {scores['fid']:.4f}  KID {_kid_text(scores['kid'], scores['kid_se'])}"
        f"  held-out FID {scores['heldout_fid']:.4f}{note}")


def baselines(setup, cfg, workdir, num_samples, tag, log, keep_images=False):
    """Scores (and optionally samples) of DDPM / DDIM at the search's K, cached in workdir."""
    path = os.path.join(workdir, f"baselines_{tag}_{num_samples}.json")
    cached = None if keep_images else read_cache(path, log)
    if cached is not None:
        return cached
    log(f"baselines at K={cfg.num_steps} on {num_samples} samples:")
    scores, samples = {}, {}
    for label, family, options in components.baseline_specs():
        layer = components.build_layer(family, setup.denoiser, cfg.num_steps, **options)
        scores[label], samples[label] = sample_and_score(setup, layer, num_samples, label,
                                                          log)
    files.write_json(path, scores)
    return (scores, samples) if keep_images else scores


_FAMILY_LABELS = {"ggdm": "GGDM", "ddim_sigma": "DDIM-sigma", "vars": "VARS", "rddim": "Relaxed DDIM"}


def learned_label(cfg):
    """The table label of a search's sampler, e.g. "DDSS GGDM +PRED +TIME"."""
    return (f"DDSS {_FAMILY_LABELS.get(cfg.family, cfg.family)}"
            + (" +PRED" if cfg.pred and cfg.family == "ggdm" else "") + (" +TIME" if cfg.time else ""))


def reference_file(setup, steps, num_samples):
    """(file name, key) of the cached scores of `steps`-step DDPM on num_samples samples.

    The key holds the model's weights digest, the sample count, the evaluation seed, the
    step count and setup.inputs_fingerprint (data, feature networks, schedule, prediction);
    the name hashes it."""
    key = [setup.model_fingerprint, num_samples, evaluation.EVAL_SEED, steps,
           setup.inputs_fingerprint]
    return f"ddpm{steps}-{hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]}.json", key


def score_reference(setup, steps, num_samples, log):
    """(scores, images) of DDPM with `steps` linear-stride steps on the evaluation seeds."""
    layer = components.build_layer("ddpm", setup.denoiser, steps, stride="linear")
    return sample_and_score(setup, layer, num_samples, f"DDPM {steps} steps", log,
                             show_progress=True)


def reference_scores(setup, cfg, num_samples, log, cache_dir=None, return_images=False):
    """Scores of DDPM with all T steps (the quality a fast sampler aims for), cached per model.

    Computed once per model, sample count and feature networks (about 7 minutes for 2,000
    digits on 2 CPU cores) and reused by every search. The bundled digits DDPM ships its
    entries in assets/digits_ddpm/reference/ (2,000 samples, as ddss_search uses, made by
    tools/bundled_model_report.py; 10,000, as ddss_benchmark uses, from its cache); any
    other model, count or feature network is computed here.
    With return_images, returns (scores, images), images None when the scores were cached.
    """
    steps = min(cfg.reference_steps, setup.denoiser.schedule.num_timesteps)
    name, key = reference_file(setup, steps, num_samples)
    cache_dir = cache_dir or metrics.reference.default_cache_dir()
    for directory in (cache_dir, os.path.join(pretrained.asset_dir("digits_ddpm"), "reference")):
        scores = read_cache(os.path.join(directory, name), log)
        if scores is not None:
            return (scores, None) if return_images else scores
    path = os.path.join(cache_dir, name)
    log(f"DDPM with {steps} steps on {num_samples} samples (once per model; cached in {path}):")
    scores, images = score_reference(setup, steps, num_samples, log)
    os.makedirs(cache_dir, exist_ok=True)
    files.write_json(path, dict(scores, key=key))
    return (scores, images) if return_images else scores


def _kid_text(kid, kid_se):
    """ "KID +- SE", or "n/a" for a row without KID (the resampled training data)."""
    if kid is None:
        return "n/a"
    return f"{kid:.5f} +- " + ("n/a" if kid_se is None else f"{kid_se:.5f}")


def _num(value, fmt):
    return "n/a" if value is None else format(value, fmt)


def markdown_table(records):
    """Rows: samplers; columns: FID, KID +- SE, IS, held-out FID."""
    lines = ["| sampler | K | FID | KID (+- SE) | IS | held-out FID |", "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['sampler']} | {r['num_steps']} | {r['fid']:.4f} | "
                     f"{_kid_text(r['kid'], r['kid_se'])} "
                     f"| {_num(r['is'], '.3f')} | {r['heldout']:.4f} |")
    return "\n".join(lines) + "\n"


def record(label, k, scores):
    """One results.json record: sampler, num_steps, fid, kid, kid_se, is, heldout, num_samples."""
    return dict(sampler=label, num_steps=int(k), fid=scores["fid"], kid=scores["kid"],
                kid_se=scores["kid_se"], heldout=scores["heldout_fid"], num_samples=scores["num_samples"],
                **{"is": scores.get("is")})  # None (JSON null) without classifier logits


def finish(setup, cfg, workdir, log):
    """Final evaluation on cfg.final_samples, then coefficients, export and results (last)."""
    n, k = cfg.final_samples, cfg.num_steps
    base_scores, base_images = baselines(setup, cfg, workdir, n, "final", log, keep_images=True)
    ref = reference_scores(setup, cfg, n, log)
    label = learned_label(cfg)
    learned, learned_images = sample_and_score(setup, setup.layer, n, label, log)
    records = [record(lbl, k, s) for lbl, s in base_scores.items()]
    records.append(record(label, k, learned))
    steps = min(cfg.reference_steps, setup.denoiser.schedule.num_timesteps)
    records.append(record(f"DDPM {steps} steps", steps, ref))
    rows = [base_images[lbl][:12] for lbl in base_scores] + [learned_images[:12]]
    grid = images.labelled_rows(rows, ncols=12, scale=4, labels=list(base_scores) + [label])
    images.write_png(os.path.join(workdir, "samples", "compare.png"), grid)
    export.write_coefficients(setup.layer, os.path.join(workdir, "coefficients.json"),
                              model_fingerprint=export.model_fingerprint(setup.net))
    export_dir = export.export_sampler(setup.layer, os.path.join(workdir, "export"))
    best = min(r["fid"] for r in records[:-2])
    # The real data themselves at this sample count: the floor of FID (KID is unbiased).
    floor = setup.scorer(setup.resampled_real(n))
    summary = dict(config=json.loads(cfg.to_json()), records=records, export=export_dir,
                   fid_ratio_to_best_baseline=learned["fid"] / best,
                   training_data_resampled=dict(fid=floor["fid"], heldout=floor["heldout_fid"],
                                                num_samples=n),
                   query_times=np.asarray(setup.layer.query_times()).tolist())
    table = markdown_table(records)
    with files.atomic_file(os.path.join(workdir, "results.md")) as f:
        f.write(f"# DDSS search: {label}, K = {k}\n\n{table}\n"
                f"Rows 1-4 of samples/compare.png are the baselines in this order, row 5 the "
                f"learned sampler, all on the same x_T. FID ratio learned / best baseline: "
                f"{summary['fid_ratio_to_best_baseline']:.3f}.\n\n"
                f"FID's floor at {n} samples: {n} reference images drawn with replacement "
                f"score FID {floor['fid']:.4f}, held-out FID "
                f"{floor['heldout_fid']:.4f} (what a model reproducing its data "
                f"exactly would get).\n")
    files.write_json(os.path.join(workdir, "results.json"), summary)
    log("\n" + table)
    return summary
