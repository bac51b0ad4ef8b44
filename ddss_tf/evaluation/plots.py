"""Pictures of evaluation records (matplotlib, the `plots` extra): FID against K, sample grids."""

import numpy as np

from ddss_tf import files
from ddss_tf.evaluation import records as records_lib

__all__ = ["fid_vs_k", "sample_grid"]


def fid_vs_k(records, ks, path):
    """FID against K, one line per sampler (log-log); the real data (role "data") and the
    many-step reference (a K outside ks) as horizontal lines, learned samplers in bold."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(8.4, 4.6), dpi=120)
    colors = iter(plt.get_cmap("tab20").colors * 2)  # a dozen rows: more than the 10 defaults
    series, roles = {}, {}
    for r in records:
        series.setdefault(r["sampler"], []).append((r["num_steps"], r["fid"]))
        roles[r["sampler"]] = r["role"]
    for label, points in series.items():
        points = sorted(points)
        if roles[label] == "data":  # the real data: the metric's floor
            ax.axhline(points[0][1], color="tab:olive", ls=":", lw=1.5, label=f"{label} (floor)")
            continue
        if len(points) == 1 and points[0][0] not in ks:
            ax.axhline(points[0][1], color="k", ls="--", lw=1,
                       label=f"{label} ({points[0][0]})")
            continue
        learned = roles[label] == "learned"
        ax.plot(*zip(*points), marker="o" if learned else ".", lw=2 if learned else 1,
                color=next(colors), label=label)
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
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    with files.atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


def sample_grid(cells, ks, path):
    """Rows: samplers, columns: K; each cell its records' "grid" images (the same x_T)."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from ddss_tf import images

    labels = list(dict.fromkeys(c["sampler"] for c in cells))
    cols = records_lib.columns(cells, ks)
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
                ax.set_title(records_lib.column_label(k), fontsize=8)
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            cell = by_key.get((label, k))
            if cell is None:
                continue
            grid = images.make_grid(np.asarray(cell["grid"], np.float32), ncols=3, scale=2)
            ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray",
                      interpolation="nearest")
    fig.tight_layout()
    with files.atomic_file(path, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
