"""A finished search's report from its role-tagged records: results.md's text and the grid of
samples/compare.png (the search writes them, with results.json, into its work directory).

    text = report.search_markdown(results, breakdown, redraw_command, compare_images)
    grid = report.compare_grid({label: images}, count)

`results` is what results.json holds (config, records tagged by role, the search's cost, the
coefficients kept, the data's floor, across-scales records): the Markdown is rendered from it
alone, plus what results.json does not hold: how the network evaluations break down, the
command that redraws the first evaluation batch and the images per compare.png row.
"""

from ddss_tf import images
from ddss_tf.evaluation import draws, records as records_lib

__all__ = ["COMPARE_IMAGES", "compare_grid", "search_markdown", "across_scales_markdown"]

# Images per row of samples/compare.png.
COMPARE_IMAGES = 12


def compare_grid(rows, count=COMPARE_IMAGES):
    """A labelled grid (uint8 [H, W, C]): one row of the first `count` images per sampler, in
    the order of `rows` ({label: images})."""
    return images.labelled_rows([imgs[:count] for imgs in rows.values()], ncols=count, scale=4,
                                labels=list(rows))


def _seconds_text(seconds):
    return "an unknown time" if seconds is None else f"{seconds:.0f} s"


def search_markdown(results, breakdown, redraw_command, compare_images=COMPARE_IMAGES):
    """results.md of a finished search.

    results: the results.json dict; breakdown: what its network evaluations count, e.g. "400
    steps x batch 128 x K = 10 in the loss"; redraw_command: the ddss_sample command that
    redraws the evaluation's first batch; compare_images: images per compare.png row.
    """
    recs = results["records"]
    baselines = [r for r in recs if r["role"] == "baseline"]
    learned = next(r for r in recs if r["role"] == "learned")
    label, k, n = learned["sampler"], learned["num_steps"], learned["num_samples"]
    selected, floor = results.get("selected"), results["training_data_resampled"]
    batch = min(draws.BATCH_SIZE, n)
    text = (f"# DDSS search: {label}, K = {k}\n\n{records_lib.markdown_table(recs)}\n"
            f"Rows 1-{len(baselines)} of samples/compare.png are the baselines in this "
            f"order, row {len(baselines) + 1} the learned sampler, all on the same x_T. "
            f"FID ratio learned / best baseline: "
            f"{results['fid_ratio_to_best_baseline']:.3f}.\n\n"
            f"The search: {_seconds_text(results['search_seconds'])} of training, "
            f"{results['search_network_evaluations']:,} network evaluations ({breakdown})"
            + (f"; {kept_text(selected)}" if selected else "") + ".\n\n"
            f"FID's floor at {n} samples: {n} reference images drawn with replacement "
            f"score FID {floor['fid']:.4f}, held-out FID {floor['heldout']:.4f} (what a model "
            f"reproducing its data exactly would get).\n\n"
            f"The evaluation's samples come from seed {draws.EVAL_SEED} in batches "
            f"of {batch}: `{redraw_command}`, run in this directory, redraws the first batch, "
            f"whose first {compare_images} images are compare.png's last row.\n")
    if results.get("across_scales"):
        text += across_scales_markdown(results["across_scales"], label)
    return text


def kept_text(selected):
    """What results.md says of the kept coefficients (results.json's "selected"): by the rule
    that kept them (search.select; a record without "select" was written by "best")."""
    step, n = selected["step"], selected["validation_samples"]
    fid = f"{selected['validation_fid']:.4f}"
    if selected.get("select") != "paired":  # "best"
        return (f"the coefficients kept are step {step}'s, whose FID on {n} validation samples "
                f"was the lowest ({fid})")
    if step == 0:
        return (f"no step beat the start in {selected['confidence']:.0%} of the paired resamples "
                f"of {n} validation samples, so the coefficients kept are the start's "
                f"(validation FID {fid})")
    return (f"the coefficients kept are step {step}'s, the lowest FID on {n} validation "
            f"samples ({fid}) among the steps that beat the start in "
            f"{selected['confidence']:.0%} of the paired resamples")


def across_scales_markdown(across, label):
    """results.md's section on a sampler across guidance scales: a table per anchor."""
    parts = [f"\n## {label} at each anchor scale\n\nOne sampler, its coefficients "
             "interpolated in the guidance scale w; the baselines guided at the same w.\n"]
    for entry in across:
        parts.append(f"\n### w = {entry['guidance_scale']:g} (FID ratio learned / best baseline "
                     f"{entry['fid_ratio_to_best_baseline']:.3f})\n\n"
                     + records_lib.markdown_table(entry["records"]))
    return "".join(parts)
