"""The benchmark's outputs: table.md (the paper's shape, every metric, the search costs),
results.json, and the PNGs."""

import os

import numpy as np

from ddss_tf import evaluation, files, images
from ddss_tf.evaluation import plots, records as records_lib

__all__ = ["RECORD_KEYS", "CONDITIONAL_KEYS", "SEED_KEYS", "paper_table", "cost_table",
           "metrics_table", "seed_summaries", "write_outputs"]

# A cell's record: an evaluation record and its search cost (evaluation.records owns both);
# a seeded learned row's also its seed and group.
RECORD_KEYS = records_lib.RECORD_KEYS + records_lib.COST_KEYS
CONDITIONAL_KEYS = records_lib.CONDITIONAL_KEYS
SEED_KEYS = ("seed", "group")


def seed_summaries(records):
    """One record per group of seeded rows and K: the mean and (sample) standard deviation
    over its seeds of FID and held-out FID (fid, fid_std, heldout, heldout_std, seeds), labelled
    "<group> (mean over seeds)": one row at every K, however many seeds each K has (its cell
    says how many)."""
    groups = {}
    for r in records:
        if r.get("group") is not None:
            groups.setdefault((r["group"], r["num_steps"]), []).append(r)
    out = []
    for (group, k), rs in groups.items():
        fids, held = (np.array([r[key] for r in rs], np.float64) for key in ("fid", "heldout"))
        out.append(dict(sampler=f"{group} (mean over seeds)", num_steps=k,
                        fid=float(fids.mean()), fid_std=_std(fids), heldout=float(held.mean()),
                        heldout_std=_std(held), seeds=sorted(r["seed"] for r in rs),
                        num_samples=rs[0]["num_samples"], role="learned", summary=True))
    return out


def _std(values):
    """The sample standard deviation (ddof 1), None for a single value."""
    return float(values.std(ddof=1)) if len(values) > 1 else None


def _pm(value, std):
    return f"{value:.3f}" + ("" if std is None else f" ± {std:.3f}")


def paper_table(records, ks):
    """The paper's Table 1 shape: rows samplers, columns K, "FID / IS" cells ("FID ± std /
    held-out FID ± std (N seeds)" for the mean of several seeds); the all-steps DDPM row and the
    resampled training data (K = 0, column "data") fill their own columns."""
    cols = records_lib.columns(records, ks)
    rows = {}
    for r in records:
        if r.get("summary"):
            n = len(r["seeds"])
            cell = (f"{_pm(r['fid'], r['fid_std'])} / held-out {_pm(r['heldout'], r['heldout_std'])}"
                    f" ({n} seed{'s' if n > 1 else ''})")
        else:
            is_ = "n/a" if r["is"] is None else f"{r['is']:.2f}"  # no IS without classifier logits
            cell = f"{r['fid']:.3f} / {is_}"
        rows.setdefault(r["sampler"], {})[r["num_steps"]] = cell
    lines = ["| sampler | " + " | ".join(records_lib.column_label(k) for k in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for label, cells in rows.items():
        lines.append(f"| {label} | " + " | ".join(cells.get(k, "") for k in cols) + " |")
    return "\n".join(lines) + "\n"


def cost_table(records):
    """The learned rows' search cost beside their FID: which buys the most quality per minute
    ("" without learned rows). Seconds are the search's training loop on its machine."""
    learned = [r for r in records if r["role"] == "learned"]
    if not learned:
        return ""
    lines = ["\nWhat each learned sampler cost to search (its training loop's wall time and the "
             "network evaluations in its loss):\n",
             "| sampler | K | FID | search minutes | network evaluations |", "|---|---|---|---|---|"]
    for r in learned:
        seconds, evals = r["search_seconds"], r["search_network_evaluations"]
        lines.append(f"| {r['sampler']} | {r['num_steps']} | {r['fid']:.3f} | "
                     f"{'n/a' if seconds is None else format(seconds / 60, '.1f')} | "
                     f"{'n/a' if evals is None else format(evals, ',')} |")
    return "\n".join(lines) + "\n"


def metrics_table(records):
    """Every metric of every cell (the search's results.md columns)."""
    return evaluation.markdown_table(records)


def write_outputs(cfg, cells, workdir, log):
    records = [{k: c[k] for k in RECORD_KEYS + CONDITIONAL_KEYS + SEED_KEYS if k in c}
               for c in cells]
    summaries = seed_summaries(records)
    ks = list(cfg.num_steps)
    n = cfg.num_samples
    text = (f"# Benchmark: FID / IS on {n} samples\n\n"
            f"Model `{cfg.search.model}`, data `{cfg.search.dataset}` ({cfg.search.split}), "
            f"features `{cfg.search.features}`, held-out features "
            f"`{cfg.search.heldout_features}`; the same x_T for every cell.\n\n"
            f"{paper_table(records + summaries, ks)}\nEvery metric (KID with its block "
            f"standard error; "
            f"held-out FID in the second feature space):\n\n{metrics_table(records)}"
            f"{cost_table(records)}")
    with files.atomic_file(os.path.join(workdir, "table.md")) as f:
        f.write(text)
    files.write_json(os.path.join(workdir, "results.json"), records + summaries)
    if any("class_fid" in r for r in records):
        _write_label_grids(cells, ks, workdir)
    try:
        # A seeded row is drawn as the mean of its seeds.
        plots.fid_vs_k([r for r in records if r.get("group") is None] + summaries, ks,
                       os.path.join(workdir, "fid_vs_k.png"))
        plots.sample_grid(cells, ks, os.path.join(workdir, "samples.png"))
    except ImportError:
        log('matplotlib is not installed: no fid_vs_k.png / samples.png '
            '(pip install "ddss_tf[plots]")')
    log("\n" + paper_table(records + summaries, ks))
    return records + summaries


def _write_label_grids(cells, ks, workdir):
    """samples_by_label_k<K>.png for each K: rows samplers, columns the requested labels (a
    conditional model's cells keep one image per class, in label order)."""
    for k in ks:
        rows = [c for c in cells if c["num_steps"] == k]
        if not rows:
            continue
        grid = images.labelled_rows([np.asarray(c["grid"], np.float32) for c in rows],
                                    ncols=len(rows[0]["grid"]), scale=4,
                                    labels=[c["sampler"] for c in rows])
        images.write_png(os.path.join(workdir, f"samples_by_label_k{k}.png"), grid)
