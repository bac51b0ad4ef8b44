"""The paper's table on one model: training-free and learned samplers at several K.

    records = benchmark.run(BenchmarkConfig(), "bench")      # what `ddss_benchmark` does

A cell is one sampler at one K. It draws `num_samples` images on the evaluation
seeds (search.evaluation.EVAL_SEED: the same x_T for every sampler and every K)
and scores them with search.evaluation.Scorer: FID, KID +- SE and IS in the
feature space the searches optimise, and the held-out FID. Every finished cell
is cached in workdir/cells/ under a key naming the model, the feature networks,
the sample count and (for a learned sampler) its coefficients, so an interrupted
benchmark resumes where it stopped and a changed input is recomputed.

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

Outputs in workdir: table.md (the paper's shape, rows samplers, columns K,
"FID / IS" cells, then every metric), results.json (one record per cell),
fid_vs_k.png and samples.png (rows samplers, columns K, the same x_T
everywhere). The PNGs need matplotlib (`pip install "ddss_tf[plots]"`).
"""

import dataclasses
import hashlib
import json
import math
import os

import numpy as np

from ddss_tf import export, files, interrupt
from ddss_tf.search import components, evaluation, report
from ddss_tf.search.config import SearchConfig
from ddss_tf.search.run import differing_settings, run_search

__all__ = ["BenchmarkConfig", "Interrupted", "sampler_names", "run", "paper_table",
           "metrics_table", "RECORD_KEYS"]

RECORD_KEYS = ("sampler", "num_steps", "fid", "kid", "kid_se", "is", "heldout", "num_samples")
# Images per cell kept for the sample grid (the first ones of the first evaluation batch).
GRID_IMAGES = 6
_ALL_STEPS = "ddpm_all"
_DATA = "training_data"


def _catalogue():
    """name -> (label, kind, spec): kind "fixed" (family, options), "learned" (pred, time),
    "all" (DDPM with every step of the model) or "data" (the real images, resampled)."""
    out = {}
    for label, family, options in components.baseline_specs():
        out[label.lower().replace(" ", "_")] = (label, "fixed", (family, options))
    out["dpm_solver_pp_2m"] = ("DPM-Solver++(2M)", "fixed", ("dpm_solver_pp_2m", {}))
    out["unipc"] = ("UniPC", "fixed", ("unipc", {}))
    for name, pred_time in (("ggdm", (False, False)), ("ggdm_pred_time", (True, True))):
        cfg = SearchConfig(family="ggdm", pred=pred_time[0], time=pred_time[1])
        out[name] = (report.learned_label(cfg), "learned", pred_time)
    out[_ALL_STEPS] = ("DDPM all T steps", "all", None)
    out[_DATA] = ("Training data, resampled", "data", None)
    return out


_SAMPLERS = _catalogue()


def sampler_names():
    """Every row `run` can evaluate, in table order."""
    return list(_SAMPLERS)


@dataclasses.dataclass
class BenchmarkConfig:
    """What to evaluate.

    search: the template of every search: model, data, feature networks and the
      optimisation settings of the learned rows (family, pred, time and K are set per row;
      its final_samples is the search's own final evaluation, not the benchmark's).
    searches: directory of the learned rows' search work directories ("" = workdir/searches).
    num_samples: samples per cell. FID's upward bias shrinks as this grows: on the bundled
      digits, the training images themselves score 0.65 at 2,000 and 0.13 at 10,000, so at
      2,000 the bias is as large as the differences between the better samplers.
    """
    samplers: tuple = tuple(sampler_names())
    num_steps: tuple = (5, 10, 20)
    num_samples: int = 10000
    searches: str = ""
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)

    def validate(self):
        unknown = [s for s in self.samplers if s not in _SAMPLERS]
        if unknown or not self.samplers:
            raise ValueError(f"unknown samplers {unknown or '(none given)'}; accepted: "
                             f"{', '.join(sampler_names())}")
        if not self.num_steps or any(int(k) != k or k < 1 for k in self.num_steps):
            raise ValueError(f"num_steps must be a non-empty list of integers >= 1, got "
                             f"{list(self.num_steps)}")
        if self.num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 (KID needs two samples), got "
                             f"{self.num_samples}")
        self.search.validate()


def _search_config(cfg, k, pred, time):
    return dataclasses.replace(cfg.search, family="ggdm", pred=pred, time=time, num_steps=int(k))


# A search the benchmark started was stopped (SIGINT / SIGTERM); rerun to resume. The old
# spelling of interrupt.Interrupted, which run_search raises.
Interrupted = interrupt.Interrupted


def _learned_layer(setup, cfg, k, pred, time, workdir, log):
    """(layer, digest of its coefficients.json): loaded from, or first searched into, its
    search work directory. A finished search there with other settings is refused."""
    scfg = _search_config(cfg, k, pred, time)
    directory = os.path.join(cfg.searches or os.path.join(workdir, "searches"), scfg.run_name())
    path = os.path.join(directory, "coefficients.json")
    results = os.path.join(directory, "results.json")
    if os.path.exists(results):
        diff = differing_settings(files.read_json(results, "results file", dict).get("config"), scfg)
        if diff:
            raise ValueError(f"{directory} holds a finished search with different "
                             f"{', '.join(diff)} than this benchmark's; give the same settings "
                             "or another --searches directory")
    else:
        log(f"searching {scfg.run_name()} in {directory} (rerun to resume if interrupted)")
        try:
            run_search(scfg, directory, log)
        except interrupt.Interrupted as e:
            raise interrupt.Interrupted(e.signal_name, f"the search in {directory} was "
                                        "interrupted; its checkpoint is saved: rerun the same "
                                        "command to resume") from e
    with open(path, "rb") as f:
        digest = hashlib.sha1(f.read()).hexdigest()[:16]
    return export.load_coefficients(path, setup.denoiser, remat=False), digest


def _cell_key(setup, cfg, name, k, extra):
    key = [name, int(k), cfg.num_samples, evaluation.EVAL_SEED, setup.model_fingerprint,
           setup.inputs_fingerprint, extra]
    return json.loads(json.dumps(key))


def _grid_images(layer, setup, num_samples):
    """The first GRID_IMAGES samples of `evaluation.sample(layer, num_samples, ...)`: the
    first batch's x_T and noise, cut to GRID_IMAGES (each sample depends only on its own
    x_T and noise)."""
    from ddss_tf import samplers

    batch = min(evaluation.BATCH_SIZE, num_samples)
    x_T, noise = samplers.draw_noise(evaluation.EVAL_SEED, layer.num_steps,
                                     [batch] + list(setup.image_shape))
    n = min(GRID_IMAGES, batch)
    return layer(x_T[:n], noise[:, :n]).numpy()


def _column(k):
    return "data" if k == 0 else f"K = {k}"


def _evaluate(setup, cfg, name, k, workdir, log):
    """The cached or freshly computed cell: dict(record keys..., grid=[...])."""
    label, kind, spec = _SAMPLERS[name]
    layer, extra = None, None
    if kind == "fixed":
        family, options = spec
        extra = [family, options]
    elif kind == "learned":
        layer, extra = _learned_layer(setup, cfg, k, *spec, workdir, log)
    key = _cell_key(setup, cfg, name, k, extra)
    path = os.path.join(workdir, "cells", f"{name}_k{k}_n{cfg.num_samples}.json")
    cached = report.read_cache(path, log)
    if cached is not None:
        if cached.get("key") == key:
            return cached
        log(f"  {label} K={k}: inputs changed since {path}; recomputing")
    if kind == "fixed":
        family, options = spec
        layer = components.build_layer(family, setup.denoiser, k, **options)
    if kind == "data":
        imgs = setup.resampled_real(cfg.num_samples)
        # KID is unbiased (its floor is 0), but not for a sample that repeats the very images
        # of the reference set (the two sets are not independent): this row reports no KID.
        scores = dict(setup.scorer(imgs), kid=None, kid_se=None)
        report.log_scores(label, scores, log)
        grid = imgs[:GRID_IMAGES]
    elif kind == "all":
        layer = components.build_layer("ddpm", setup.denoiser, k, stride="linear")
        rcfg = dataclasses.replace(cfg.search, reference_steps=k)
        scores, imgs = report.reference_scores(setup, rcfg, cfg.num_samples, log,
                                               return_images=True)
        report.log_scores(label, scores, log, " (cached)" if imgs is None else "")
        # Cached scores come without images: draw just the grid's.
        grid = imgs[:GRID_IMAGES] if imgs is not None else _grid_images(layer, setup,
                                                                         cfg.num_samples)
    else:
        scores, imgs = report.sample_and_score(setup, layer, cfg.num_samples,
                                                f"{label} K={k}", log)
        grid = imgs[:GRID_IMAGES]
    cell = dict(report.record(label, k, scores), key=key, grid=np.round(grid, 5).tolist())
    files.write_json(path, cell)
    return cell


def paper_table(records, ks):
    """The paper's Table 1 shape: rows samplers, columns K, "FID / IS" cells; the
    all-steps DDPM row and the resampled training data (K = 0, column "data") fill their
    own columns."""
    cols = _columns(records, ks)
    rows = {}
    for r in records:
        is_ = "n/a" if r["is"] is None else f"{r['is']:.2f}"  # no IS without classifier logits
        rows.setdefault(r["sampler"], {})[r["num_steps"]] = f"{r['fid']:.3f} / {is_}"
    lines = ["| sampler | " + " | ".join(_column(k) for k in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for label, cells in rows.items():
        lines.append(f"| {label} | " + " | ".join(cells.get(k, "") for k in cols) + " |")
    return "\n".join(lines) + "\n"


def _columns(records, ks):
    """ks, then the K values only single rows have (all steps), then 0 (the data) last."""
    ks = sorted(set(ks))
    extra = {r["num_steps"] for r in records} - set(ks)
    return ks + sorted(extra - {0}) + sorted(extra & {0})


def metrics_table(records):
    """Every metric of every cell (the search's results.md columns)."""
    return report.markdown_table(records)


def _plot_fid(records, ks, path):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    series = {}
    for r in records:
        series.setdefault(r["sampler"], []).append((r["num_steps"], r["fid"]))
    for label, points in series.items():
        points = sorted(points)
        if len(points) == 1 and points[0][0] == 0:  # the real data: the metric's floor
            ax.axhline(points[0][1], color="tab:olive", ls=":", lw=1.5, label=f"{label} (floor)")
            continue
        if len(points) == 1 and points[0][0] not in ks:
            ax.axhline(points[0][1], color="k", ls="--", lw=1,
                       label=f"{label} ({points[0][0]})")
            continue
        learned = label.startswith("DDSS")
        ax.plot(*zip(*points), marker="o" if learned else ".", lw=2 if learned else 1,
                label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(sorted(set(ks)))
    ax.set_xticklabels([str(k) for k in sorted(set(ks))])
    ax.minorticks_off()
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("K (network evaluations per sample)")
    ax.set_ylabel("FID (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_samples(cells, ks, path):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from ddss_tf import images

    labels = list(dict.fromkeys(c["sampler"] for c in cells))
    cols = _columns(cells, ks)
    fig, axes = plt.subplots(len(labels), len(cols), squeeze=False,
                             figsize=(1.3 * len(cols) + 1.6, 0.75 * len(labels) + 0.4), dpi=120)
    by_key = {(c["sampler"], c["num_steps"]): c for c in cells}
    for i, label in enumerate(labels):
        for j, k in enumerate(cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if i == 0:
                ax.set_title(_column(k), fontsize=8)
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            cell = by_key.get((label, k))
            if cell is None:
                continue
            grid = images.make_grid(np.asarray(cell["grid"], np.float32), ncols=3, scale=2)
            ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray",
                      interpolation="nearest")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_outputs(cfg, cells, workdir, log):
    records = [{k: c[k] for k in RECORD_KEYS} for c in cells]
    ks = list(cfg.num_steps)
    n = cfg.num_samples
    text = (f"# Benchmark: FID / IS on {n} samples\n\n"
            f"Model `{cfg.search.model}`, data `{cfg.search.dataset}` ({cfg.search.split}), "
            f"features `{cfg.search.features}`, held-out features "
            f"`{cfg.search.heldout_features}`; the same x_T for every cell.\n\n"
            f"{paper_table(records, ks)}\nEvery metric (KID with its block standard error; "
            f"held-out FID in the second feature space):\n\n{metrics_table(records)}")
    with files.atomic_file(os.path.join(workdir, "table.md")) as f:
        f.write(text)
    files.write_json(os.path.join(workdir, "results.json"), records)
    try:
        _plot_fid(records, ks, os.path.join(workdir, "fid_vs_k.png"))
        _plot_samples(cells, ks, os.path.join(workdir, "samples.png"))
    except ImportError:
        log('matplotlib is not installed: no fid_vs_k.png / samples.png '
            '(pip install "ddss_tf[plots]")')
    log("\n" + paper_table(records, ks))
    return records


def run(cfg, workdir, log=print):
    """Evaluate every (sampler, K) cell of cfg (cached in workdir/cells) and write the
    table, results.json and the PNGs. Returns the records (dicts with RECORD_KEYS)."""
    cfg.validate()
    setup = evaluation.EvalSetup(cfg.search, log, num_steps=cfg.num_steps)
    T = setup.denoiser.schedule.num_timesteps
    plan = [(name, k) for name in cfg.samplers
            for k in ([T] if name == _ALL_STEPS else [0] if name == _DATA
                      else sorted(set(cfg.num_steps)))]
    os.makedirs(os.path.join(workdir, "cells"), exist_ok=True)
    cells = []
    for i, (name, k) in enumerate(plan):
        log(f"[{i + 1}/{len(plan)}] {_SAMPLERS[name][0]}, K = {k}")
        cells.append(_evaluate(setup, cfg, name, k, workdir, log))
    bad = [f"{c['sampler']} K={c['num_steps']}" for c in cells if not math.isfinite(c["fid"])]
    if bad:
        log(f"non-finite FID in: {', '.join(bad)}")
    return _write_outputs(cfg, cells, workdir, log)
