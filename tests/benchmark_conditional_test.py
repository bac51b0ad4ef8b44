"""ddss_benchmark on a class-conditional model at a guidance scale: the records' class scores
recomputed from outside (the held-out classifier's accuracy on samples drawn directly from the
guided model), the sampler across scales searched once and shared by the benchmarks at two
scales, the grid by requested label, and the conditional settings refused in one line."""

import os

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import benchmark, denoisers, evaluation, export, files, pretrained, samplers
from ddss_tf import noise as noise_lib
from ddss_tf import schedules
from ddss_tf.search import SearchConfig

import toy_networks

pytestmark = pytest.mark.usefixtures("isolated_cache")

_N = 20
_ROWS = ("ddim_quadratic", "ggdm_pred_time_across")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    net = toy_networks.conditional_eps_model()
    path = str(tmp_path_factory.mktemp("model") / "cond.keras")
    net.save(path)
    return path, denoisers.from_keras_model(net, schedules.linear_beta())


def _cfg(path, scale, **kw):
    search = SearchConfig(model=path, schedule="linear_beta", guidance_scale=scale,
                          xla=False, checkpoint_every=1, final_samples=16, reference_steps=10)
    return benchmark.BenchmarkConfig(**dict(dict(samplers=_ROWS, num_steps=(2,), num_samples=_N,
                                                 train_steps=2, batch_size=8,
                                                 row_settings=dict(eval_every=1000,
                                                                   eval_samples=16,
                                                                   validation_samples=16),
                                                 guidance_anchors=(0.0, 2.0),
                                                 search=search), **kw))


def _accuracy(layer, cond, scale):
    """The held-out classifier's accuracy on the evaluation seeds' samples of `layer` guided at
    `scale`, sample i asking for label i mod 10, computed here."""
    labels = np.arange(_N) % 10
    x_T, z = noise_lib.draw(evaluation.EVAL_SEED, layer.num_steps, [_N, 8, 8, 1])
    with layer.using_denoiser(cond.guided(labels, scale)):
        x0 = np.clip(layer(x_T, z if layer.stochastic else None).numpy(), -1, 1)
    logits = pretrained.digits_heldout_classifier()(x0)
    return float(np.mean(np.argmax(logits, -1) == labels))


def test_a_conditional_benchmark_at_two_scales_shares_its_search_across_scales(model, tmp_path):
    path, cond = model
    searches, logs = str(tmp_path / "searches"), []
    runs = {}
    for scale in (1.0, 2.0):
        workdir = str(tmp_path / f"w{scale:g}")
        runs[scale] = benchmark.run(_cfg(path, scale, searches=searches), workdir,
                                    log=lambda *a: logs.append(" ".join(map(str, a))))
    assert sum("searching" in line for line in logs) == 1  # one search for both scales
    assert os.listdir(searches) == ["ggdm_pred_time_ddim_k2_w0-2"]
    coefficients = os.path.join(searches, "ggdm_pred_time_ddim_k2_w0-2", "coefficients.json")
    for scale, records in runs.items():
        by_row = {r["sampler"]: r for r in records}
        assert set(by_row) == {"DDIM quadratic", "DDSS GGDM +PRED +TIME from DDIM, across scales"}
        for r in records:
            assert {"class_fid", "class_kid", "heldout_accuracy"} <= set(r)
        learned = export.load_coefficients(coefficients, cond.unbound(), remat=False)
        assert by_row["DDSS GGDM +PRED +TIME from DDIM, across scales"]["heldout_accuracy"] == \
            pytest.approx(_accuracy(learned, cond, scale), abs=1e-6)
        ddim = samplers.create("ddim", cond.unbound(), num_steps=2, stride="quadratic")
        assert by_row["DDIM quadratic"]["heldout_accuracy"] == pytest.approx(
            _accuracy(ddim, cond, scale), abs=1e-6)
        png = tf.io.read_file(str(tmp_path / f"w{scale:g}" / "samples_by_label_k2.png"))
        grid = tf.io.decode_png(png).numpy()
        assert grid.shape[0] > 2 * 8 * 4 and grid.shape[1] > 10 * 8 * 4  # 2 rows, 10 labels
        text = (tmp_path / f"w{scale:g}" / "table.md").read_text()
        assert "class FID | held-out accuracy" in text


def test_the_warm_row_starts_from_the_per_scale_searches_and_adds_their_cost(model, tmp_path):
    path, cond = model
    searches, logs = str(tmp_path / "searches"), []
    cfg = _cfg(path, 2.0, searches=searches,
               samplers=("ggdm_pred_time", "ggdm_pred_time_across_warm"))
    records = benchmark.run(cfg, str(tmp_path / "w2"),
                            log=lambda *a: logs.append(" ".join(map(str, a))))
    # The per-scale search at w = 2 serves its own row and the warm row's anchor 2.
    assert sum("searching" in line for line in logs) == 3
    names = ["ggdm_pred_time_ddim_k2_w0", "ggdm_pred_time_ddim_k2_w2",
             "ggdm_pred_time_ddim_k2_w0-2_warm"]
    assert sorted(os.listdir(searches)) == sorted(names)
    results = {n: files.read_json(os.path.join(searches, n, "results.json")) for n in names}
    warm = results[names[-1]]["config"]
    assert warm["start_from"] == [os.path.join(searches, n, "coefficients.json")
                                  for n in names[:2]]
    assert warm["guidance_scale"] == [0.0, 2.0] and warm["train_steps"] == 2
    assert warm["eval_every"] == benchmark.WARM_TUNE["eval_every"]
    row = {r["sampler"]: r for r in records}[
        "DDSS GGDM +PRED +TIME from DDIM, across scales from per-scale searches"]
    for key in ("search_seconds", "search_network_evaluations"):
        assert row[key] == pytest.approx(sum(r[key] for r in results.values()))
    # What the warm search started from: each per-scale search's sampler at its anchor.
    started = [line for line in logs if line.startswith("starting anchor")]
    assert len(started) == 2 and "(searched at w 0)" in started[0] \
        and "(searched at w 2)" in started[1]


@pytest.mark.parametrize("overrides,message", [
    (dict(scale=[0.0, 1.0]), "a benchmark runs at one guidance scale"),
    (dict(scale=None), "rows ggdm_pred_time_across take a conditional model"),
    (dict(guidance_anchors=(2.0, 1.0)), "must increase"),
])
def test_bad_conditional_settings_are_one_line_and_write_nothing(model, tmp_path, overrides,
                                                                 message):
    scale = overrides.pop("scale", 1.0)
    cfg = _cfg(model[0], scale, **overrides)
    with pytest.raises(ValueError, match=message):
        benchmark.run(cfg, str(tmp_path / "w"), log=lambda *a: None)
    assert not os.path.exists(tmp_path / "w")


def test_default_rows_follow_the_model():
    assert "ggdm_pred_time_across" not in benchmark.default_samplers()
    assert benchmark.BenchmarkConfig().samplers == benchmark.default_samplers()
    conditional = benchmark.default_samplers(conditional=True)
    assert {"dpm_solver_pp_2m", "unipc", "ggdm_pred_time", "ggdm_pred_time_across"} <= \
        set(conditional)
    cfg = benchmark.BenchmarkConfig(search=SearchConfig(guidance_scale=3.0),
                                    samplers=conditional)
    across = cfg.rows_search("ggdm_pred_time_across", 10)
    assert across.guidance_scale == [0.0, 1.0, 3.0]
    assert across.run_name() == "ggdm_pred_time_ddim_k10_w0-1-3"
    assert cfg.rows_search("ggdm_pred_time", 10).run_name() == "ggdm_pred_time_ddim_k10_w3"
