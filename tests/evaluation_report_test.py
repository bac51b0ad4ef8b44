"""evaluation.records and evaluation.report: the record schema, tables, a search's results.md
and compare.png rendered from role-tagged records (checked against values computed here)."""

import numpy as np
import pytest

from ddss_tf import images
from ddss_tf.evaluation import draws, records, report, scoring


def _scores(fid, heldout, n=100, **extra):
    return dict(fid=fid, kid=fid / 100, kid_se=0.001, heldout_fid=heldout, num_samples=n,
                **{"is": 7.5}, **extra)


def test_a_record_holds_the_schema_keys_with_the_heldout_fid_renamed():
    rec = records.record("DDIM quadratic", 10, _scores(1.5, 0.4), "baseline")
    assert set(rec) == set(records.RECORD_KEYS)
    assert (rec["heldout"], rec["num_steps"], rec["role"]) == (0.4, 10, "baseline")
    cond = records.record("x", 5, _scores(2.0, 0.5, class_fid=3.0, class_kid=0.1,
                                         heldout_accuracy=0.9), "learned")
    assert set(cond) == set(records.RECORD_KEYS + records.CONDITIONAL_KEYS)
    assert set(records.SCORE_KEYS) <= set(_scores(1, 1))
    assert records.no_cost() == {k: None for k in records.COST_KEYS}
    with pytest.raises(ValueError, match="unknown role 'winner'; accepted: baseline"):
        records.record("x", 5, _scores(1, 1), "winner")


def test_the_markdown_table_has_a_row_per_record_and_n_a_where_a_metric_is_missing():
    recs = [records.record("A", 3, _scores(1.23456, 0.5), "baseline"),
            records.record("B", 3, dict(_scores(2.0, 0.25), kid=None, kid_se=None,
                                        **{"is": None}), "data")]
    lines = records.markdown_table(recs).splitlines()
    assert lines[0].startswith("| sampler | K | FID |") and len(lines) == 4
    assert lines[2] == "| A | 3 | 1.2346 | 0.01235 +- 0.00100 | 7.500 | 0.5000 |"
    assert lines[3] == "| B | 3 | 2.0000 | n/a | n/a | 0.2500 |"
    assert records.columns(recs + [dict(recs[0], num_steps=1000), dict(recs[0], num_steps=0)],
                           [5, 3]) == [3, 5, 1000, 0]
    assert [records.column_label(k) for k in (3, 0)] == ["K = 3", "data"]


def _results(selected=True, across=False):
    recs = [records.record("DDPM linear", 4, _scores(9.0, 3.0, n=40), "baseline"),
            records.record("DDIM quadratic", 4, _scores(6.0, 2.0, n=40), "baseline"),
            records.record("DDSS GGDM", 4, _scores(3.0, 1.0, n=40), "learned"),
            records.record("DDPM 1000 steps", 1000, _scores(1.0, 0.3, n=40), "reference")]
    out = dict(records=recs, fid_ratio_to_best_baseline=0.5, search_seconds=61.4,
               search_network_evaluations=123456,
               training_data_resampled=dict(fid=0.7, heldout=0.2, num_samples=40),
               selected=dict(step=200, validation_fid=2.5, validation_samples=16)
               if selected else None)
    if across:
        out["across_scales"] = [dict(guidance_scale=1.0, records=recs[:3],
                                     fid_ratio_to_best_baseline=0.25)]
    return out


def test_results_md_says_what_the_records_and_the_search_hold():
    text = report.search_markdown(_results(), "400 steps x batch 8 x K = 4 in the loss",
                                  "ddss_sample --seed=1", compare_images=12)
    assert text.startswith("# DDSS search: DDSS GGDM, K = 4\n\n")
    assert records.markdown_table(_results()["records"]) in text
    assert "Rows 1-2 of samples/compare.png are the baselines in this order, row 3 the " \
           "learned sampler" in text
    assert "FID ratio learned / best baseline: 0.500." in text
    assert ("The search: 61 s of training, 123,456 network evaluations (400 steps x batch 8 x "
            "K = 4 in the loss); the coefficients kept are step 200's, whose FID on 16 "
            "validation samples was the lowest (2.5000).") in text
    assert "score FID 0.7000, held-out FID 0.2000" in text
    assert (f"from seed {draws.EVAL_SEED} in batches of 40: `ddss_sample --seed=1`, run in this "
            "directory, redraws the first batch, whose first 12 images are compare.png's last "
            "row.") in text
    assert "at each anchor scale" not in text
    plain = report.search_markdown(dict(_results(selected=False), search_seconds=None), "b", "c")
    assert "an unknown time of training" in plain and "coefficients kept" not in plain
    # Paired selection says the rule it kept by: a step that beat the start, or the start.
    paired = dict(_results(), selected=dict(step=200, validation_fid=2.5, validation_samples=16,
                                            select="paired", confidence=0.95))
    assert ("the coefficients kept are step 200's, the lowest FID on 16 validation samples "
            "(2.5000) among the steps that beat the start in 95% of the paired resamples."
            ) in report.search_markdown(paired, "b", "c")
    paired["selected"]["step"] = 0
    assert ("no step beat the start in 95% of the paired resamples of 16 validation samples, "
            "so the coefficients kept are the start's (validation FID 2.5000).") in \
        report.search_markdown(paired, "b", "c")
    across = report.search_markdown(_results(across=True), "b", "c")
    assert "### w = 1 (FID ratio learned / best baseline 0.250)" in across


def test_compare_grid_puts_each_sampler_in_a_band_in_order_with_count_images():
    rows = {name: np.full([20, 2, 2, 1], value, np.float32)
            for name, value in (("first", -1.0), ("second", 0.0), ("third", 1.0))}
    grid = report.compare_grid(rows, count=5)
    # One band per sampler: 5 images of 2 x 2 at scale 4 with 1-pixel padding (10 pixels high),
    # bands 6 pixels apart, the label column on the left.
    band = images.make_grid(rows["first"][:5], 5, 1, 4)
    assert band.shape[:2] == (10, 46)
    assert grid.shape[0] == 3 * 10 + 2 * 6 and grid.shape[1] > 46
    for b, value in enumerate((-1.0, 0.0, 1.0)):
        want = images.to_uint8(np.full([1, 1, 1, 1], value, np.float32))[0, 0, 0, 0]
        assert grid[b * 16 + 5, -4, 0] == want  # inside the band's last image


def test_checked_scores_refuse_non_finite_metrics_and_drop_an_undefined_standard_error():
    with pytest.raises(FloatingPointError, match="DDIM K=3: fid, kid not finite"):
        scoring.checked_scores(_scores(float("nan"), 0.1), "DDIM K=3")
    assert scoring.checked_scores(dict(_scores(1.0, 0.1), kid_se=float("nan")), "x")["kid_se"] \
        is None
