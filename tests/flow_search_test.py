"""ddss_search, the export and ddss_sample on rectified-flow models, end to end: a Keras file
predicting a velocity with a schedule .json (SD3's shift, KerasHub's time convention), and a
class-conditional flow model trained with label dropout, searched with classifier-free
guidance."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import search_helpers
import testing
import toy_networks
from ddss_tf import (benchmark, denoisers, evaluation, export, models, noise, pretrained,
                     sampling, schedules)
from ddss_tf.benchmark import rows as benchmark_rows
from ddss_tf.search import SearchConfig, objectives, plan, run_search, start
from ddss_tf.search import workdir as workdir_lib
from ddss_tf.training import ddpm

pytestmark = pytest.mark.usefixtures("isolated_cache")

SCHEDULE = {"kind": "rectified_flow", "num_timesteps": 1000, "shift": 3.0, "time_scale": 1000.0}
W = 1.5


def _files(tmp_path, network):
    """(model path, schedule path): a toy network (output x + 0.1 f(x, t): a velocity near the
    flow state, as at pure noise) saved as a flow model with SCHEDULE."""
    path, schedule = str(tmp_path / "flow.keras"), str(tmp_path / "rf.json")
    network.save(path)
    with open(schedule, "w") as f:
        json.dump(SCHEDULE, f)
    return path, schedule


def test_a_search_on_a_flow_keras_file_exports_and_samples(tmp_path):
    path, schedule = _files(tmp_path, toy_networks.search_eps_model())
    cfg = search_helpers.tiny_config(model=path, schedule=schedule, prediction="flow",
                                     num_steps=3, train_steps=2)
    assert cfg.stride == "flow_euler"              # GGDM's default grid on a flow model
    results = run_search(cfg, str(tmp_path / "run"), log=search_helpers.QUIET)
    baselines = [r["sampler"] for r in results["records"] if r["role"] == "baseline"]
    assert baselines == [label for label, _, _ in evaluation.FLOW_BASELINES]
    coefficients = str(tmp_path / "run" / "coefficients.json")
    doc = json.loads(open(coefficients).read())
    assert doc["schedule"] == SCHEDULE and doc["model"]["prediction"] == "flow"
    den, _ = models.load_denoiser(path, schedule=schedule, prediction="flow")
    learned = export.load_coefficients(coefficients, den, remat=False)
    x_T, z = noise.draw(4, 3, [5, 8, 8, 1])
    got, _ = export.load_sampler(results["export"]).from_noise(x_T.numpy(), z.numpy())
    np.testing.assert_allclose(got, np.clip(learned(x_T, z).numpy(), -1, 1), rtol=1e-4,
                               atol=1e-5)
    # ddss_sample: the export, and the coefficients on the model (the file's schedule and
    # prediction being the defaults), give the same images.
    want, _ = sampling.draw(sampling.from_export(results["export"]), 4, seed=3, batch_size=4)
    rebuilt = sampling.from_coefficients(coefficients, model=path)
    np.testing.assert_allclose(sampling.draw(rebuilt, 4, seed=3, batch_size=4)[0], want,
                               rtol=1e-4, atol=1e-5)
    out = str(tmp_path / "s.npz")
    proc = testing.run_binary("ddss_sample", f"--sampler={results['export']}", "--num_samples=4",
                              "--seed=3", "--batch_size=4", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_allclose(np.load(out)["images"], want, rtol=0, atol=1e-6)
    # The same network read with another shift is another model for these coefficients.
    other = dict(SCHEDULE, shift=1.0)
    den_1, _ = models.load_denoiser(path, schedule=other, prediction="flow")
    with pytest.raises(ValueError, match="does not match the model: schedule"):
        export.load_coefficients(coefficients, den_1)


def test_a_flow_model_needs_its_schedule_and_prediction_together(tmp_path):
    path, schedule = _files(tmp_path, toy_networks.search_eps_model())
    with pytest.raises(ValueError, match="prediction flow with a linear_beta schedule: a flow "
                                         "model .* runs on a rectified_flow schedule"):
        models.load(path, schedule="linear_beta", prediction="flow")
    with pytest.raises(ValueError, match="prediction eps with a rectified_flow schedule"):
        models.load(path, schedule=schedule)
    proc = testing.run_binary("ddss_sample", "--family=ddim", "--num_steps=2", f"--model={path}",
                              f"--schedule={schedule}", f"--out={tmp_path}/x.npz")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [ln for ln in proc.stderr.splitlines() if "error:" in ln][0].startswith(
        "ddss_sample: error: prediction eps with a rectified_flow schedule")
    with open(tmp_path / "bad.json", "w") as f:
        json.dump(dict(SCHEDULE, shift=-1), f)
    with pytest.raises(ValueError, match="shift must be a finite number > 0, got -1"):
        models.load(path, schedule=str(tmp_path / "bad.json"), prediction="flow")


def test_the_start_screen_and_its_plan_try_the_flow_grids_on_a_flow_model_only(tmp_path):
    """init auto (the default search's start) screens every grid of the model's schedule: the
    rectified-flow grids (the flow defaults) on a flow model, never on a VP one; the plan
    counts what the screen runs."""
    flow, vp = schedules.rectified_flow(1000, 3.0, 1000.0), schedules.linear_beta(1000)
    on_flow = start.candidates("ggdm", True, "", flow)
    assert {("ddim", "flow_euler"), ("unipc", "flow_sigmas"),
            ("dpm_solver_pp_2m", "flow_sigmas")} <= set(on_flow)
    on_vp = start.candidates("ggdm", True, "", vp)
    assert not {"flow_euler", "flow_sigmas"} & {s for _, s in on_vp}
    assert set(on_flow) - set(on_vp) == {(i, s) for i, s in on_flow
                                         if s in ("flow_euler", "flow_sigmas")}
    path, schedule = _files(tmp_path, toy_networks.search_eps_model())
    cfg = search_helpers.tiny_config(model=path, schedule=schedule, prediction="flow",
                                     init="auto")
    assert cfg.stride == ""                        # the screen picks the grid
    ev = evaluation.Evaluator(cfg, search_helpers.QUIET, num_steps=(cfg.num_steps,))
    chosen = start.resolve(cfg, ev, str(tmp_path / workdir_lib.START), search_helpers.QUIET)
    screened = [(c["init"], c["stride"]) for c in chosen.record["round1"]]
    assert sorted(screened) == sorted(on_flow) and (chosen.init, chosen.stride) in on_flow
    kid = objectives.get(cfg.objective)

    def screen(schedule):
        return dict((name, n) for name, n, _ in plan.phases(cfg, kid, schedule=schedule))[
            "start: screen of the training-free samplers"]

    first = min(start.SCREEN_SAMPLES, cfg.eval_samples)
    assert screen(flow) - screen(vp) == cfg.num_steps * first * (len(on_flow) - len(on_vp))


def test_a_flow_models_benchmark_has_every_solver_the_screen_tries_on_the_flow_sigmas():
    """The best training-free row of a flow model's table is the best over what a search's
    screen can start from on the flow sigmas: every solver has its row there, on flow models
    only."""
    flow = schedules.rectified_flow(1000, 1.0, 1000.0)
    screened = {(init, stride) for init, stride in start.candidates("ggdm", True, "", flow)
                if stride == "flow_sigmas"}
    rows = [benchmark_rows.ROWS[name] for name in benchmark.FLOW_ROWS]
    tabled = {(row.family, row.options.get("stride")) for row in rows}
    assert screened and screened <= tabled
    assert set(benchmark.FLOW_ROWS) <= set(benchmark.default_samplers(flow=True))
    assert not set(benchmark.FLOW_ROWS) & set(benchmark.default_samplers())
    assert benchmark_rows.ROWS["ipndm_flow_sigmas"].label == "iPNDM flow_sigmas"


def _redraw_zero_kernels(path, seed=0):
    """Give a briefly trained UNet in `path` a visible dependence on its label.

    The UNet starts with zero residual-branch and output kernels (Ho et al.'s initialisation),
    and after a few steps they are still about 1e-6: the network's answer for a label and for
    the null class then differ by 1e-10, and guidance changes nothing a test can see. Those
    kernels are redrawn from N(0, 1 / fan_in) and the weights written back, so that the label
    (through the class embedding in every residual block) moves the output by about 0.1."""
    net, _ = pretrained.load_ddpm(path)
    rng = np.random.default_rng(seed)
    for v in net.weights:
        w = v.numpy()
        if w.ndim >= 2 and np.abs(w).max() < 1e-3:
            v.assign(rng.normal(0, 1 / np.sqrt(np.prod(w.shape[:-1])), w.shape).astype(np.float32))
    net.save_weights(os.path.join(path, "model.weights.h5"))
    return net


def test_a_guided_search_on_a_class_conditional_flow_model(tmp_path):
    """A class-conditional flow model trained with label dropout (ddss_train_model's library,
    a tiny UNet, a few steps; its zero-initialised kernels then redrawn so that the label
    matters) searched with classifier-free guidance through the existing machinery, from its
    directory alone (it carries its schedule and prediction); the export takes labels and the
    scale and equals the learned sampler on the guided model."""
    net = dict(ch=8, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], dropout=0.0,
               norm_groups=4, num_classes=10)
    path = ddpm.train(ddpm.TrainConfig(net=net, schedule=schedules.rectified_flow(
        1000, 3.0, 1000.0).get_config(), batch_size=16, train_steps=4, warmup_steps=1,
        xla=False, label_dropout=0.1), str(tmp_path / "train"), log=search_helpers.QUIET)
    net = _redraw_zero_kernels(path)
    x, t = tf.random.stateless_normal([2, 8, 8, 1], [0, 1]), tf.constant([500.0, 500.0])
    null = tf.fill([2], 10)
    assert np.abs(net([x, t, tf.constant([3, 1])]) - net([x, t, null])).max() > 1e-2
    cfg = SearchConfig(model=path, guidance_scale=W, num_steps=2, batch_size=8, train_steps=2,
                       xla=False, checkpoint_every=1, eval_every=1000, eval_samples=20, validation_samples=20,
                       final_samples=20, reference_steps=10)
    # The default recipe starts from the screen (init auto), which picks the grid: the flow
    # grids are among those it tries on a flow model.
    assert cfg.prediction == "flow" and cfg.init == "auto" and cfg.stride == ""
    results = run_search(cfg, str(tmp_path / "run"), log=search_helpers.QUIET)
    screened = json.loads((tmp_path / "run" / workdir_lib.START).read_text())
    assert {"flow_euler", "flow_sigmas"} <= {c["stride"] for c in screened["round1"]}
    learned = [r for r in results["records"] if r["role"] == "learned"][0]
    assert np.isfinite(learned["fid"]) and np.isfinite(learned["class_fid"])
    cond, _ = models.load_denoiser(path)
    assert isinstance(cond, denoisers.ConditionalDenoiser) and cond.prediction == "flow"
    coefficients = str(tmp_path / "run" / "coefficients.json")
    labels = np.array([3, 1, 4], np.int32)
    x_T, z = noise.draw(7, 2, [3, 8, 8, 1])
    sampler = export.load_sampler(results["export"])
    got, _ = sampler.from_noise(x_T.numpy(), z.numpy(), labels=labels, guidance_scale=W)
    direct = export.load_coefficients(coefficients, cond.guided(labels, tf.constant(W)),
                                      remat=False)
    np.testing.assert_allclose(got, np.clip(direct(x_T, z).numpy(), -1, 1), rtol=1e-4, atol=1e-5)
    plain = export.load_coefficients(coefficients, cond.guided(labels, 0.0), remat=False)
    assert np.abs(np.clip(plain(x_T, z).numpy(), -1, 1) - got).max() > 1e-4   # w matters
    with pytest.raises(ValueError, match=r"guidance_scale must be in \[1.5, 1.5\]"):
        sampler.from_noise(x_T.numpy(), z.numpy(), labels=labels, guidance_scale=0.0)
