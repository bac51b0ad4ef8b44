"""ddss_benchmark: cells recomputed independently, resume from the cache, table shape, bad input.

The independent recomputation takes a cell's sampler from outside the benchmark (the
search's exported SavedModel, or a sampler layer built directly), draws the evaluation
seeds' noise, and computes FID with float64 numpy / scipy from the classifier's features.
"""

import dataclasses
import json
import os

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from ddss_tf import benchmark, data, evaluation, metrics, models, pretrained, samplers
from ddss_tf import noise as noise_lib
from ddss_tf.benchmark import rows as benchmark_rows  # where a missing search is run
from ddss_tf.search import SearchConfig

import testing
from search_helpers import toy_model

pytestmark = pytest.mark.usefixtures("isolated_cache")

_QUIET = lambda *a: None  # noqa: E731
_N = 24


def _cfg(**kw):
    search = SearchConfig(model=toy_model(), schedule="linear_beta", xla=False,
                          checkpoint_every=1, final_samples=16, reference_steps=10)
    base = dict(samplers=("ddim_quadratic", "unipc", "ggdm_pred_time"), num_steps=(3,),
                num_samples=_N, train_steps=2, batch_size=8, search=search,
                row_settings=dict(eval_every=1000, eval_samples=16, validation_samples=16))
    base.update(kw)
    return benchmark.BenchmarkConfig(**base)


def _features(images):
    """The bundled classifier's penultimate features, float64."""
    extractor = pretrained.digits_features()
    return np.asarray(extractor(np.clip(images, -1, 1).astype(np.float32)), np.float64)


def _fid64(a, b):
    """Frechet distance in float64 with scipy's matrix square root (the reference)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(ca @ cb).real
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(ca + cb - 2 * covmean))


def _eval_noise(k):
    return noise_lib.draw(evaluation.EVAL_SEED, k, [_N, 8, 8, 1])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One benchmark run (a 2-step search included) shared by the tests below."""
    workdir = str(tmp_path_factory.mktemp("bench"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDSS_TF_CACHE", os.path.join(workdir, "cache"))
        records = benchmark.run(_cfg(), workdir, log=_QUIET)
    return workdir, records


def test_records_have_the_documented_keys_and_outputs_exist(finished):
    workdir, records = finished
    with open(os.path.join(workdir, "results.json")) as f:
        written = json.load(f)
    assert written == records
    assert [(r["sampler"], r["num_steps"]) for r in records] == [
        ("DDIM quadratic", 3), ("UniPC", 3), ("DDSS GGDM +PRED +TIME from DDIM", 3)]
    for r in records:
        assert tuple(r) == benchmark.RECORD_KEYS
        assert r["num_samples"] == _N and np.isfinite([r["fid"], r["kid"], r["is"]]).all()
    table = open(os.path.join(workdir, "table.md")).read()
    assert "| UniPC | " in table and "| K = 3 |" in table
    # The learned row's search cost, read from its search's results.json; none for the others.
    cfg = _cfg().rows_search("ggdm_pred_time", 3)
    with open(os.path.join(workdir, "searches", "kid_ggdm_pred_time_ddim_k3", "results.json")) as f:
        search = json.load(f)
    assert records[2]["search_seconds"] == search["search_seconds"] > 0
    assert records[2]["search_network_evaluations"] == cfg.train_steps * cfg.batch_size * 3
    assert all(r["search_seconds"] is None for r in records[:2])
    assert (f"| DDSS GGDM +PRED +TIME from DDIM | 3 | {records[2]['fid']:.3f} | "
            f"{search['search_seconds'] / 60:.1f} | {cfg.train_steps * cfg.batch_size * 3:,} |"
            in table)
    for png in ("fid_vs_k.png", "samples.png"):
        assert open(os.path.join(workdir, png), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_learned_cell_equals_fid_recomputed_from_the_exported_sampler(finished):
    workdir, records = finished
    search_dir = os.path.join(workdir, "searches", "kid_ggdm_pred_time_ddim_k3")
    version = sorted(os.listdir(os.path.join(search_dir, "export")))[-1]
    exported = tf.saved_model.load(os.path.join(search_dir, "export", version))
    x_T, noise = _eval_noise(3)
    images = exported.signatures["from_noise"](x_T=x_T, noise=noise)["images"].numpy()
    real = _features(data.load("digits", "train"))
    expected = _fid64(_features(images), real)
    learned = [r for r in records if r["sampler"].startswith("DDSS")][0]
    assert learned["fid"] == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_fixed_cell_equals_fid_recomputed_from_a_directly_built_sampler(finished):
    _, records = finished
    denoiser, _ = models.load_denoiser(**models.options(_cfg().search))
    layer = samplers.create("ddim", denoiser, num_steps=3, stride="quadratic", eta=0.0, remat=False)
    images = layer(*_eval_noise(3)).numpy()
    expected = _fid64(_features(images), _features(data.load("digits", "train")))
    assert records[0]["fid"] == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_a_rerun_reads_every_cell_from_the_cache(finished, monkeypatch):
    workdir, records = finished

    def fail(*args, **kwargs):
        raise AssertionError("a cached cell was recomputed")

    monkeypatch.setattr(evaluation.draws, "sample", fail)
    monkeypatch.setattr(benchmark_rows, "run_search", fail)
    assert benchmark.run(_cfg(), workdir, log=_QUIET) == records


def test_a_cell_whose_inputs_changed_is_recomputed(finished, tmp_path):
    workdir, records = finished
    cell = os.path.join(workdir, "cells", f"unipc_k3_n{_N}.json")
    with open(cell) as f:
        doc = json.load(f)
    doc["key"][-1] = ["unipc", {"stride": "linear"}]  # as if written for other inputs
    doc["fid"] = -1.0
    with open(cell, "w") as f:
        json.dump(doc, f)
    again = benchmark.run(_cfg(samplers=("unipc",)), workdir, log=_QUIET)
    assert again[0]["fid"] == pytest.approx(records[1]["fid"], rel=1e-6)


def test_only_searched_skips_the_learned_cells_without_a_finished_search(finished, tmp_path,
                                                                        monkeypatch):
    workdir, records = finished
    searches = os.path.join(workdir, "searches")  # ggdm_pred_time searched at K = 3 only

    def fail(*args, **kwargs):
        raise AssertionError("--only_searched started a search")

    monkeypatch.setattr(benchmark_rows, "run_search", fail)
    log = []
    again = benchmark.run(_cfg(samplers=("unipc", "ggdm_pred_time"), num_steps=(3, 4),
                               searches=searches, only_searched=True), str(tmp_path), log=log.append)
    assert [(r["sampler"], r["num_steps"]) for r in again] == [
        (records[1]["sampler"], 3), (records[1]["sampler"], 4), (records[2]["sampler"], 3)]
    assert again[2]["fid"] == pytest.approx(records[2]["fid"], rel=1e-6)
    assert not os.path.exists(os.path.join(searches, "kid_ggdm_pred_time_ddim_k4"))
    assert any(line.startswith(f"skipping {records[2]['sampler']}, K = 4: no finished search")
               for line in log)
    with open(tmp_path / "table.md") as f:
        learned = [line for line in f if line.startswith(f"| {records[2]['sampler']} |")][0]
    assert learned.rstrip().endswith("|  |")  # its K = 4 cell empty


def test_all_steps_row_has_its_own_column_and_reuses_the_cached_reference(tmp_path, monkeypatch):
    # T = 50: the all-steps chain runs eagerly, one network call per step.
    search = dataclasses.replace(_cfg().search, num_timesteps=50)
    cfg = _cfg(samplers=("ddim_linear", "ddpm_all"), num_steps=(2,), num_samples=16,
               search=search)
    records = benchmark.run(cfg, str(tmp_path / "a"), log=_QUIET)
    assert [(r["sampler"], r["num_steps"]) for r in records] == [
        ("DDIM linear", 2), ("DDPM all T steps", 50)]
    table = benchmark.paper_table(records, [2])
    assert table.splitlines()[0] == "| sampler | K = 2 | K = 50 |"
    assert table.splitlines()[2].endswith(" |  |") and "|  | " in table.splitlines()[3]

    # A second benchmark (another workdir, no cells) takes the 1000-step scores from the
    # reference cache the first one wrote (the one searches use), without sampling them again.
    def fail(*args, **kwargs):
        raise AssertionError("the 1000-step reference was sampled twice")

    monkeypatch.setattr(evaluation.Evaluator, "score_reference", fail)
    again = benchmark.run(cfg, str(tmp_path / "b"), log=_QUIET)
    assert again == records


def test_the_ode_reference_row_is_the_searches_ode_reference_and_a_flow_tables_default(tmp_path):
    # T = 50: the row's 100 steps are capped at the model's T, as a search's reference is.
    search = dataclasses.replace(_cfg().search, num_timesteps=50)
    cfg = _cfg(samplers=("ode_100",), num_steps=(2,), num_samples=16, search=search)
    (record,) = benchmark.run(cfg, str(tmp_path), log=_QUIET)
    assert (record["num_steps"], record["role"]) == (50, "reference")
    ev = evaluation.Evaluator(dataclasses.replace(search, reference="ode", reference_steps=100),
                              _QUIET, num_steps=(2,))
    assert ev.reference_steps == 50
    layer = ev.baseline_layer("dpm_solver_pp_2m", 50)
    want, _ = ev.sample_and_score(layer, 16, "ode")
    assert record["fid"] == pytest.approx(want["fid"], rel=1e-6)
    # Each kind of model's default table has its own reference.
    vp, flow = benchmark.default_samplers(), benchmark.default_samplers(flow=True)
    assert "ddpm_all" in vp and "ode_100" not in vp
    assert "ode_100" in flow and "ddpm_all" not in flow


def test_training_data_row_scores_resampled_real_images_in_the_last_column(tmp_path):
    cfg = _cfg(samplers=("ddim_linear", "training_data"), num_steps=(2,), num_samples=40)
    records = benchmark.run(cfg, str(tmp_path), log=_QUIET)
    assert [(r["sampler"], r["num_steps"]) for r in records] == [
        ("DDIM linear", 2), ("Training data, resampled", 0)]
    real = data.load("digits", "train")
    picked = real[np.random.default_rng(evaluation.EVAL_SEED).integers(0, len(real), 40)]
    assert records[1]["fid"] == pytest.approx(_fid64(_features(picked), _features(real)),
                                              rel=1e-3)
    with open(os.path.join(tmp_path, "cells", "training_data_k0_n40.json")) as f:
        grid = np.asarray(json.load(f)["grid"])
    # Every grid image is one of the training digits, unchanged.
    assert all(np.abs(real - g).max(axis=(1, 2, 3)).min() < 1e-5 for g in grid)
    assert records[1]["kid"] is None and records[1]["kid_se"] is None  # no KID for repeats
    assert benchmark.paper_table(records, [2]).splitlines()[0] == "| sampler | K = 2 | data |"
    assert "| Training data, resampled | 0 | " in benchmark.metrics_table(records)


def test_kid_does_not_inherit_the_reference_sets_order():
    # KID's block estimator pairs contiguous blocks; the digits are stored writer by writer, and
    # blocks in that order scored real digits against their own set at KID 0.22 +- 0.07.
    real, labels = data.load_labeled("digits", "train")
    extractor = pretrained.digits_features()
    stored = metrics.compute_statistics(extractor, real, progress=False)
    by_class = metrics.compute_statistics(extractor, real[np.argsort(labels, kind="stable")],
                                          progress=False)
    picked = real[np.random.default_rng(1).integers(0, len(real), 2000)]
    a = evaluation.Scorer(extractor, stored)(picked)
    b = evaluation.Scorer(extractor, by_class)(picked)
    assert a["kid"] == pytest.approx(b["kid"], rel=1e-6) and a["fid"] == pytest.approx(b["fid"])
    # The same for the scored set (e.g. real images in their stored order, or a grid by class).
    assert evaluation.Scorer(extractor, stored)(picked[::-1])["kid"] == pytest.approx(a["kid"],
                                                                                     rel=1e-6)
    # Samples of the reference set itself: KID is unbiased, so within two standard errors of 0.
    assert abs(a["kid"]) < 2 * a["kid_se"]
    in_data_order = metrics.kid(_features(picked), stored.features, block_size=200)
    assert in_data_order[0] > 2 * in_data_order[1]  # what the shuffle removes


def test_a_learned_row_refuses_a_finished_search_with_other_settings(finished):
    workdir, _ = finished
    cfg = _cfg(samplers=("ggdm_pred_time",), learning_rate=0.5)
    with pytest.raises(ValueError, match="holds a finished search with different learning_rate"):
        benchmark.run(cfg, workdir, log=_QUIET)
    # Set on the template, where a row would not read it: refused, not ignored.
    cfg = _cfg(samplers=("ggdm_pred_time",))
    cfg.search = dataclasses.replace(cfg.search, learning_rate=0.5)
    with pytest.raises(ValueError, match="give them as the BenchmarkConfig's .* not its search"):
        benchmark.run(cfg, workdir, log=_QUIET)


def test_other_real_data_recompute_the_cell(finished):
    workdir, records = finished
    cfg = _cfg(samplers=("unipc",))
    cfg.search = dataclasses.replace(cfg.search, split="all")  # train + held-out digits
    again = benchmark.run(cfg, workdir, log=_QUIET)
    assert again[0]["sampler"] == "UniPC" and again[0]["fid"] != records[1]["fid"]


def test_paper_table_is_rows_by_k_with_fid_and_is():
    recs = [dict(sampler="A", num_steps=5, fid=1.23456, **{"is": 7.891}),
            dict(sampler="A", num_steps=10, fid=0.5, **{"is": 8.0}),
            dict(sampler="B", num_steps=10, fid=2.0, **{"is": 6.0})]
    assert benchmark.paper_table(recs, [5, 10]) == (
        "| sampler | K = 5 | K = 10 |\n|---|---|---|\n"
        "| A | 1.235 / 7.89 | 0.500 / 8.00 |\n| B |  | 2.000 / 6.00 |\n")


@pytest.mark.parametrize("overrides,message", [
    (dict(samplers=("ddim", "unipc")), "unknown samplers ['ddim']; accepted: ddpm_linear"),
    (dict(num_steps=()), "num_steps must be a non-empty list"),
    (dict(num_samples=1), "num_samples must be >= 2"),
    (dict(num_steps=(10, 5000)), "num_steps 5000 exceeds the model's T = 1000"),
])
def test_bad_settings_fail_with_one_clear_message_and_write_nothing(tmp_path, overrides, message):
    workdir = str(tmp_path / "w")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        benchmark.run(_cfg(**overrides), workdir, log=_QUIET)
    assert not os.path.exists(workdir)


def test_binary_reports_bad_flags_in_one_line(tmp_path):
    proc = testing.run_binary("ddss_benchmark", f"--workdir={tmp_path}/w", "--num_steps=5,x",
                              env=testing.binary_env(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--num_steps must be integers" in proc.stderr
    assert not os.path.exists(tmp_path / "w")


def test_binarys_default_rows_are_ddss_search_at_each_k(tmp_path):
    """The binary's template leaves the objective to each K: its default rows' work directories
    are `ddss_search --num_steps=K --seed=s`'s (kid_teacher at K = 3 and kid_cv at K = 10, each
    the default there, so neither is named)."""
    proc = testing.run_binary("ddss_benchmark", f"--workdir={tmp_path}/w", "--num_steps=3,10",
                              "--samplers=ddss_s0,ddss_s1", "--only_searched",
                              f"--searches={tmp_path}/s", "--num_samples=16",
                              env=testing.binary_env(tmp_path))
    out = proc.stdout + proc.stderr
    for name in ("ggdm_pred_time_k3", "ggdm_pred_time_k10", "ggdm_pred_time_k3_s1",
                 "ggdm_pred_time_k10_s1"):
        assert f"no finished search in {tmp_path}/s/{name}\n" in out, out[-2000:]


def test_search_template_fields_reach_the_learned_rows():
    cfg = _cfg()
    scfg = benchmark.LearnedRow("ggdm_pred", pred=True, time=False).search_config(cfg, 7)
    assert (scfg.family, scfg.num_steps, scfg.pred, scfg.time) == ("ggdm", 7, True, False)
    assert scfg.final_samples == 16 and scfg.batch_size == 8  # the search's own, not _N
    assert scfg.train_steps == 2 and scfg.learning_rate == SearchConfig().learning_rate
    assert scfg.run_name() == "ggdm_pred_k7"
    assert dataclasses.replace(scfg, pred=False).run_name() == "ggdm_k7"


@pytest.mark.parametrize("k", [3, 5, 10])
@pytest.mark.parametrize("row", ["ddss_s0", "ld3_unipc"])
def test_learned_rows_search_with_ddss_searchs_defaults_at_their_k(row, k):
    """A newcomer's `ddss_search --num_steps=K` and the benchmark's row at K are one search,
    so the benchmark reuses ddss_search's work directories."""
    cfg = benchmark.BenchmarkConfig(train_steps=None, learning_rate=None)
    scfg = cfg.rows_search(row, k)
    settings = dict(family=scfg.family, num_steps=k, pred=scfg.pred)
    if row.startswith("ld3"):
        settings.update(objective="ld3", time=True, stride="")
    newcomer = SearchConfig(**settings)
    assert (scfg.train_steps, scfg.learning_rate) == (newcomer.train_steps, newcomer.learning_rate)
    few = k <= 5 or scfg.objective == "ld3"
    assert (scfg.train_steps, scfg.learning_rate) == ((400, 1e-2) if few else (100, 3e-3))
    assert scfg.reference == ("ddpm" if row.startswith("ld3") else "ode")
    if row == "ddss_s0":
        assert scfg == newcomer  # every setting, so the work directory is shared
        assert scfg.run_name() == f"ggdm_pred_time_k{k}"


def _issue14(k, **kw):
    """`ddss_search` with the recipe before issue 34 (the variants' stored searches)."""
    many = k > benchmark_rows.FEW_STEPS
    return SearchConfig(num_steps=k, **dict(benchmark_rows.ISSUE14, **dict(
        benchmark_rows.ISSUE14_MANY if many else benchmark_rows.ISSUE14_FEW, **kw)))


def test_the_row_that_starts_from_unipc_is_ddss_searchs_init_unipc_under_its_own_name():
    """A variant: the recipe before issue 34 from UniPC, in its own work directory (a solver
    init and a non-default objective are named), which a newcomer's `ddss_search` with those
    flags shares."""
    cfg = benchmark.BenchmarkConfig(train_steps=None, learning_rate=None)
    scfg = cfg.rows_search("ggdm_pred_time_unipc", 4)
    assert scfg == _issue14(4, init="unipc")
    assert (scfg.run_name(), scfg.label()) == ("kid_ggdm_pred_time_unipc_k4",
                                               "DDSS GGDM +PRED +TIME from UniPC")
    assert cfg.rows_search("ggdm_pred_time", 4).run_name() == "kid_ggdm_pred_time_ddim_k4"
    assert SearchConfig(num_steps=4, init="ddpm").run_name() == "ggdm_pred_time_ddpm_k4"
    assert SearchConfig(num_steps=4).run_name() == "ggdm_pred_time_k4"  # init auto: unnamed


def test_above_few_steps_the_row_that_starts_from_unipc_fine_tunes():
    """At K > FEW_STEPS it is `ddss_search --init=unipc` with twice the batch, a third of the
    rate, 200 steps and a 2,000-sample selection every 50 steps, in the same work directory
    name; the benchmark's own train_steps and learning_rate still win."""
    cfg = benchmark.BenchmarkConfig(train_steps=None, learning_rate=None)
    assert cfg.rows_search("ggdm_pred_time_unipc", 10) == _issue14(
        10, init="unipc", batch_size=256, learning_rate=3e-3, train_steps=200,
        eval_samples=2000, validation_samples=2000, eval_every=50)
    # kid_cv is the default objective above K = 5: KID is named there.
    assert cfg.rows_search("ggdm_pred_time_unipc", 10).run_name() == "kid_ggdm_pred_time_unipc_k10"
    assert cfg.rows_search("ggdm_pred_time_unipc", 5) == _issue14(5, init="unipc")
    assert cfg.rows_search("ggdm_pred_time", 10) == _issue14(10)
    fixed = benchmark.BenchmarkConfig(train_steps=7, learning_rate=1e-4)
    scfg = fixed.rows_search("ggdm_pred_time_unipc", 10)
    assert (scfg.train_steps, scfg.learning_rate, scfg.batch_size) == (7, 1e-4, 256)


def test_kid_teacher_row_is_the_old_recipe_with_the_teacher_term():
    """The KID + teacher variant is the recipe before issue 34 with --objective=kid_teacher, in
    its own work directory (the DDIM start named), with its own label."""
    cfg = benchmark.BenchmarkConfig(train_steps=None, learning_rate=None)
    scfg = cfg.rows_search("ggdm_pred_time_kid_teacher", 4)
    assert scfg == _issue14(4, objective="kid_teacher")
    assert (scfg.run_name(), scfg.label()) == ("ggdm_pred_time_ddim_k4",
                                               "DDSS GGDM +PRED +TIME from DDIM (KID + teacher)")
    assert (scfg.train_steps, scfg.learning_rate, scfg.select) == (800, 2e-2, "best")


def test_seeded_rows_get_each_seed_and_their_mean_and_standard_deviation():
    rows = [benchmark_rows.ROWS[f"ddss_s{s}"] for s in benchmark_rows.DEFAULT_SEEDS]
    assert [r.seed for r in rows] == [0, 1, 2] and len({r.group for r in rows}) == 1
    assert all(r.label == f"{rows[0].group} (seed {r.seed})" for r in rows)
    # One label at every K, whose objective differs (kid_teacher to K = 5, kid_cv above).
    assert rows[0].group == "DDSS GGDM +PRED +TIME, ddss_search's defaults"
    cfg = benchmark.BenchmarkConfig(train_steps=None, learning_rate=None)
    for r in rows:  # each is `ddss_search --num_steps=K --seed=s` and nothing else
        assert cfg.rows_search(r.name, 5) == SearchConfig(num_steps=5, seed=r.seed)
    fids, held = [0.5, 0.7, 0.4], [0.2, 0.25, 0.1]
    recs = [dict(sampler=r.label, num_steps=5, fid=f, heldout=h, num_samples=10,
                 role="learned", **r.extra(), **{"is": None})
            for r, f, h in zip(rows, fids, held)]
    (summary,) = benchmark.seed_summaries(recs)
    assert summary["fid"] == pytest.approx(np.mean(fids))
    assert summary["fid_std"] == pytest.approx(np.std(fids, ddof=1))
    assert summary["heldout_std"] == pytest.approx(np.std(held, ddof=1))
    assert summary["seeds"] == [0, 1, 2] and summary["sampler"].endswith("(mean over seeds)")
    table = benchmark.paper_table(recs + [summary], [5])
    assert f"| {summary['sampler']} | {np.mean(fids):.3f} ± {np.std(fids, ddof=1):.3f} /" in table
    assert "(3 seeds) |" in table
    # Another K with fewer seeds shares the summary's row, and its cell says how many.
    (one,) = benchmark.seed_summaries([dict(recs[0], num_steps=10)])
    table = benchmark.paper_table(recs + [summary, one], [5, 10])
    assert one["sampler"] == summary["sampler"] and one["fid_std"] is None
    assert table.count(summary["sampler"]) == 1 and f"{fids[0]:.3f} / held-out" in table
    assert "(1 seed) |" in table
