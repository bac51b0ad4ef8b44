"""The DDSS training loop: what a step changes, distribution, resume, NaN safety, bad input.

The distributed checks compare against `_manual_steps`, an independent single-device
computation of the same global batch: a plain GradientTape over the concatenated
per-replica noise, clipping and a fresh Keras Adam, with no tf.distribute involved.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import testing
import workers
from search_helpers import QUIET, sigint_at, tiny_config, values
from ddss_tf import evaluation, export, images, interrupt, models, progress, sampling
from ddss_tf.metrics import mmd
from ddss_tf.noise import step_noise
from ddss_tf.search import SearchConfig, run_search
from ddss_tf.search import workdir as workdir_lib
from ddss_tf.search import run as run_lib
from ddss_tf.search.run import Run

pytestmark = pytest.mark.usefixtures("isolated_cache")

def _loss_on_step_noise(setup, cfg, step):
    x_T, noise, _ = step_noise(cfg.seed, step, 0, cfg.num_steps, [cfg.batch_size, 8, 8, 1])
    feats = setup.evaluator.extractor(setup.layer(x_T, noise))
    return float(mmd.kid_loss(feats, np.mean(setup.evaluator.reference.features, 0,
                                             keepdims=True)))


def test_one_step_lowers_the_loss_and_changes_only_the_sampler():
    # From DDPM every noise scale is interior, and K = 3 has a weight on an earlier state, so
    # every variable has a gradient (from DDIM the noise scales sit on the sigmoid's boundary).
    cfg = tiny_config(learning_rate=1e-3, num_steps=3, init="ddpm")
    setup = Run(cfg, tempfile.gettempdir(), QUIET)
    net_before = values(setup.evaluator.net.weights)
    features_before = values(setup.evaluator.extractor.network.weights)
    sampler_before = values(setup.layer.trainable_variables)
    loss_before = _loss_on_step_noise(setup, cfg, 0)

    loss, norm = setup.trainer.train_step()  # the step-0 batch
    assert np.isclose(loss, loss_before, rtol=1e-4) and norm > 0
    assert _loss_on_step_noise(setup, cfg, 0) < loss_before
    changed = [not np.array_equal(a, b)
               for a, b in zip(sampler_before, values(setup.layer.trainable_variables))]
    assert all(changed), changed
    for a, b in zip(net_before, values(setup.evaluator.net.weights)):
        np.testing.assert_array_equal(a, b)
    assert int(setup.trainer.step) == 1
    # The feature network is frozen too: its weights stay, and the optimiser holds Adam's two
    # moments for each of the sampler's variables and nothing else (besides its step count).
    for a, b in zip(features_before, values(setup.evaluator.extractor.network.weights)):
        np.testing.assert_array_equal(a, b)
    optimizer = setup.trainer.optimizer
    moments = [v for v in optimizer.variables if v is not optimizer.iterations]
    assert [tuple(v.shape) for v in moments] == \
        [tuple(v.shape) for v in setup.layer.trainable_variables for _ in range(2)]


def _manual_steps(cfg, num_steps, replicas):
    """Sampler variables after num_steps steps on the global batch, without tf.distribute."""
    denoiser, _ = models.load_denoiser(**models.options(cfg))
    layer = cfg.build_sampler(denoiser)
    extractor = evaluation.load_extractor(cfg.features)
    from ddss_tf import metrics
    real = metrics.reference_statistics(extractor, cfg.dataset, cfg.split, progress=False)
    real_mean = tf.constant(real.features.mean(0, keepdims=True), tf.float32)
    local = cfg.batch_size // replicas
    layer(*step_noise(cfg.seed, 0, 0, cfg.num_steps, [local, 8, 8, 1])[:2])  # build
    assert cfg.lr_decay == "cosine"
    lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=cfg.train_steps)
    opt = keras.optimizers.Adam(lr, epsilon=1e-8)
    losses, norms = [], []
    for step in range(num_steps):
        parts = [step_noise(cfg.seed, step, r, cfg.num_steps, [local, 8, 8, 1])
                 for r in range(replicas)]
        x_T = tf.concat([p[0] for p in parts], 0)
        noise = tf.concat([p[1] for p in parts], 1)
        with tf.GradientTape() as tape:
            loss = mmd.kid_loss(extractor(layer(x_T, noise)), real_mean)
        grads = tape.gradient(loss, layer.trainable_variables)
        norms.append(float(tf.linalg.global_norm(grads)))
        grads, _ = tf.clip_by_global_norm(grads, cfg.grad_clip)
        opt.apply_gradients(zip(grads, layer.trainable_variables))
        losses.append(float(loss))
    return values(layer.trainable_variables), losses, norms


def test_mirrored_two_replicas_equal_the_single_device_global_batch():
    cfg = tiny_config(strategy="mirrored")
    setup = Run(cfg, tempfile.gettempdir(), QUIET)
    assert setup.strategy.num_replicas_in_sync == 2
    losses, norms = zip(*[setup.trainer.train_step() for _ in range(2)])
    got = values(setup.layer.trainable_variables)
    want, want_losses, want_norms = _manual_steps(cfg, 2, replicas=2)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-4)
    # Adam and clipping hide a wrongly scaled gradient in the variables; the norm does not.
    np.testing.assert_allclose(norms, want_norms, rtol=1e-4)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_interrupted_and_resumed_search_equals_uninterrupted(tmp_path, monkeypatch):
    cfg = tiny_config(train_steps=4, checkpoint_every=100)  # step 2's checkpoint: the on-exit one
    # A clock that advances 100 s per reading: a session reads it when it starts and when it
    # ends, so each session of the training loop counts 100 s.
    ticks = iter(range(0, 10 ** 6, 100))
    monkeypatch.setattr(run_lib, "_now", lambda: next(ticks))
    full = run_search(cfg, str(tmp_path / "full"), log=QUIET)
    assert full["search_seconds"] == 100
    assert full["search_network_evaluations"] == 4 * cfg.batch_size * cfg.num_steps

    sent = sigint_at(monkeypatch, 2)
    with pytest.raises(interrupt.Interrupted, match="stopped by SIGINT at step 2") as stopped:
        run_search(cfg, str(tmp_path / "resumed"), log=QUIET)
    assert stopped.value.exit_code == 130
    assert sent == [2]
    assert not os.path.exists(tmp_path / "resumed" / "results.json")
    assert tf.train.latest_checkpoint(str(tmp_path / "resumed" / "checkpoints")).endswith("ckpt-2")
    resumed = run_search(cfg, str(tmp_path / "resumed"), log=QUIET)
    assert resumed["search_seconds"] == 200  # both sessions of the interrupted run count

    def coefficients(d):
        with open(tmp_path / d / "coefficients.json") as f:
            doc = json.load(f)
        return doc["variables"], doc["query_times"]

    assert coefficients("full") == coefficients("resumed")
    # Rerunning a finished search returns its results and writes nothing new (no second export).
    assert run_search(cfg, str(tmp_path / "full"), log=QUIET) == full
    assert os.listdir(tmp_path / "full" / "export") == ["1"]
    assert [r["fid"] for r in full["records"]] == [r["fid"] for r in resumed["records"]]
    # Everything the issue asks a finished search to leave behind.
    for name in ("results.md", "results.json", "coefficients.json", "config.json",
                 "samples/compare.png", "export/1/saved_model.pb"):
        assert os.path.exists(tmp_path / "full" / name), name
    assert os.listdir(tmp_path / "full" / "tensorboard")
    labels = [r["sampler"] for r in full["records"]]
    assert labels[:4] == [s[0] for s in evaluation.BASELINES]
    assert labels[4].startswith("DDSS GGDM")
    assert labels[5] == "ODE reference (DPM-Solver++(2M), 10 steps)"
    assert [r["role"] for r in full["records"]] == ["baseline"] * 4 + ["learned", "reference"]
    floor = full["training_data_resampled"]  # the metrics' floor (benchmark_test checks its FID)
    assert floor["num_samples"] == cfg.final_samples and floor["fid"] > 0
    assert f"FID {floor['fid']:.4f}" in (tmp_path / "full" / "results.md").read_text()


def _poison(monkeypatch):
    """Make the loss NaN once flag is set (a tf.Variable, so traced functions see it)."""
    flag = tf.Variable(0.0, trainable=False)
    original = mmd.kid_loss

    def poisoned(gen, real, kernel="linear"):
        loss = original(gen, real, kernel)
        return tf.where(flag > 0, tf.constant(np.nan, loss.dtype), loss)

    monkeypatch.setattr(mmd, "kid_loss", poisoned)
    return flag


def test_nan_loss_stops_before_any_update(monkeypatch):
    flag = _poison(monkeypatch)
    setup = Run(tiny_config(), tempfile.gettempdir(), QUIET)
    setup.trainer.train_step()
    before = values(setup.layer.trainable_variables)
    iterations = int(setup.trainer.optimizer.iterations)
    flag.assign(1.0)
    with pytest.raises(FloatingPointError, match="not finite at step 1.*nothing was updated"):
        setup.trainer.train_step()
    for a, b in zip(before, values(setup.layer.trainable_variables)):
        np.testing.assert_array_equal(a, b)
    assert int(setup.trainer.step) == 1 and int(setup.trainer.optimizer.iterations) == iterations


def test_nan_in_a_search_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    flag = _poison(monkeypatch)
    original = progress.Progress.update

    def update(self, step, force=False, **metrics):
        original(self, step, force, **metrics)
        if step == 2:
            flag.assign(1.0)

    monkeypatch.setattr(progress.Progress, "update", update)
    workdir = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="last good checkpoint: .*ckpt-2"):
        run_search(tiny_config(train_steps=5), str(workdir), log=QUIET)
    ckpt_dir = str(workdir / "checkpoints")
    assert tf.train.latest_checkpoint(ckpt_dir).endswith("ckpt-2")
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(ckpt_dir))
    sampler_keys = [k for k in reader.get_variable_to_shape_map() if k.startswith("sampler/")]
    assert sampler_keys
    for k in sampler_keys:
        assert np.all(np.isfinite(reader.get_tensor(k))), k
    assert not os.path.exists(workdir / "coefficients.json")


def test_a_search_starts_from_a_learned_samplers_coefficients(tmp_path):
    run_search(tiny_config(), str(tmp_path / "first"), log=QUIET)
    path = str(tmp_path / "first" / "coefficients.json")
    cfg = tiny_config(start_from=[path])
    assert cfg.run_name() == tiny_config().run_name() + "_warm"
    setup = Run(cfg, tempfile.gettempdir(), QUIET)
    learned = export.load_coefficients(path, setup.evaluator.sampling_denoiser)
    fresh = tiny_config().build_sampler(setup.evaluator.sampling_denoiser)
    assert not all(np.array_equal(a, b) for a, b in zip(values(learned.weights),
                                                        values(fresh.weights)))
    for a, b in zip(values(setup.layer.weights), values(learned.weights)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("overrides,message", [
    (dict(start_from=["/no/such/coefficients.json"]),
     "start_from: /no/such/coefficients.json does not exist"),
    (dict(start_from=["a.json", "b.json"]), "start_from takes one coefficients.json, got 2"),
    (dict(family="ddim"), "has nothing to learn; learnable families: [a-z_, ]+$"),
    (dict(family="dpm_solver_pp_2m"), "has nothing to learn; .* learned with objective ld3"),
    (dict(family="nope"), "unknown family"),
    (dict(init="dpm_solver_pp_2m", pred=False), "init 'dpm_solver_pp_2m' needs pred"),
    (dict(family="rddim", init="dpm_solver_pp_2m"), "does not apply to the rddim family"),
    (dict(kernel="rbf"), "unknown kernel 'rbf'; accepted: linear, cubic"),
    (dict(lr_decay="step"), "unknown lr_decay 'step'; accepted: cosine, constant"),
    (dict(select="first"), "unknown select 'first'; accepted: last, best"),
    (dict(num_steps=1001), "exceeds the model's T = 1000"),
    (dict(batch_size=7, strategy="mirrored"), "multiple of the 2 replica"),
    (dict(features="/no/such/inception.pb"), "unknown feature network"),
    (dict(model="/no/such/model"), "unknown model"),
    (dict(strategy="multi_worker"), "needs TF_CONFIG"),
    (dict(strategy="tpu"), "strategy tpu needs --tpu"),
    (dict(strategy="tpu", tpu="local"), "cannot reach TPU 'local'"),
    (dict(dataset="no_such_dataset"), "unknown dataset 'no_such_dataset'"),
    (dict(model="/no/such/model.keras", schedule="cosine"), "unknown model"),
    (dict(prediction="score"), "unknown prediction 'score'"),
])
def test_bad_settings_fail_before_anything_is_written(tmp_path, overrides, message, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match=message):
        run_search(tiny_config(**overrides), str(tmp_path / "run"), log=QUIET)
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("settings,want", [
    (dict(), (100, 3e-3)),                                       # the main job, K = 10
    (dict(num_steps=6), (100, 3e-3)),
    (dict(num_steps=5), (400, 1e-2)),                            # few steps: longer, larger steps
    (dict(num_steps=3), (400, 1e-2)),
    (dict(num_steps=5, train_steps=50), (50, 1e-2)),             # a given value is kept
    (dict(num_steps=5, learning_rate=5e-4), (400, 5e-4)),
    (dict(num_steps=5, objective="ld3", family="unipc"), (400, 1e-2)),  # LD3's are K's own
])
def test_the_optimisation_defaults_depend_on_k(settings, want):
    cfg = SearchConfig(**settings)
    assert (cfg.train_steps, cfg.learning_rate) == want
    cfg.validate()
    # Recorded as numbers: config.json says what ran, and reads back as the same search.
    saved = json.loads(cfg.to_json())
    assert (saved["train_steps"], saved["learning_rate"]) == want
    assert SearchConfig.from_dict(saved) == cfg


@pytest.mark.parametrize("k,want", [
    (3, dict(objective="kid_teacher", batch_size=128, train_steps=400, learning_rate=1e-2,
             validation_samples=2000, clip_samples=True)),
    (5, dict(objective="kid_teacher", batch_size=128, train_steps=400, learning_rate=1e-2,
             validation_samples=2000, clip_samples=False)),
    (10, dict(objective="kid_cv", batch_size=128, train_steps=100, learning_rate=3e-3,
              validation_samples=5000, clip_samples=False)),
    (20, dict(objective="kid_cv", batch_size=128, train_steps=100, learning_rate=3e-3,
              validation_samples=5000, clip_samples=False)),
])
def test_the_recipe_is_resolved_from_k_printed_and_saved_and_a_flag_wins(k, want):
    want = dict(want, init="auto", select="paired", eval_samples=2000, eval_every=50)
    cfg = SearchConfig(num_steps=k)
    assert {name: getattr(cfg, name) for name in want} == want
    assert cfg.resolved() == want  # all of them came from the recipe
    line = cfg.recipe_line()
    for name, value in want.items():
        assert f"{name}={value}" in line
    saved = json.loads(cfg.to_json())  # config.json holds the values, not None
    assert {name: saved[name] for name in want} == want
    assert SearchConfig.from_dict(saved) == cfg and SearchConfig.from_dict(saved).resolved() == {}
    # A flag given overrides its recipe value and is not reported as resolved.
    given = SearchConfig(num_steps=k, batch_size=64, objective="kid")
    assert given.batch_size == 64 and "batch_size" not in given.resolved()
    assert "objective" not in given.resolved() and "batch_size=" not in given.recipe_line()
    # Under guidance the objective is KID at every K (the per-class loss); above K = 5 also
    # with the cubic kernel, whose higher moments kid_cv's correction of the mean leaves out.
    assert SearchConfig(num_steps=k, guidance_scale=2.0).objective == "kid"
    cubic = SearchConfig(num_steps=k, kernel="cubic")
    assert cubic.objective == ("kid_teacher" if k <= 5 else "kid")
    cubic.validate()


@pytest.mark.parametrize("reference,steps,want", [("ode", None, 50), ("ddpm", None, 50),
                                                   ("ode", 20, 20)])
def test_the_reference_takes_at_most_the_models_t_steps(isolated_cache, reference, steps, want):
    """On a model of T = 50 the default references (ODE 100 steps, DDPM 1000) take its 50."""
    cfg = tiny_config(num_timesteps=50, reference=reference, reference_steps=steps)
    ev = evaluation.Evaluator(cfg, QUIET)
    assert ev.reference_steps == want
    assert ev.reference_label() == ev.reference_label(want)


def test_a_workdir_of_another_search_is_refused(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    sigint_at(monkeypatch, 1)
    with pytest.raises(interrupt.Interrupted):
        run_search(tiny_config(), workdir, log=QUIET)
    with pytest.raises(ValueError, match="different num_steps"):
        run_search(tiny_config(num_steps=3), workdir, log=QUIET)
    # A cosine schedule's length is part of the trajectory: more steps would not be a resume.
    with pytest.raises(ValueError, match="different train_steps"):
        run_search(tiny_config(train_steps=5), workdir, log=QUIET)


def test_ddss_sample_redraws_the_rows_of_a_searchs_compare_png(tmp_path):
    """results.md names the ddss_sample command that redraws the evaluation's first batch (run
    in the work directory, wherever it was moved); with the baselines drawn by the same rule
    (sampling.draw), the rows rebuild compare.png."""
    cfg = tiny_config(train_steps=1)
    results = run_search(cfg, str(tmp_path / "run"), log=QUIET)
    workdir = tmp_path / "moved"
    os.rename(tmp_path / "run", workdir)
    command = re.search(r"`(ddss_sample [^`]*)`", (workdir / "results.md").read_text()).group(1)
    out = tmp_path / "learned.npz"
    assert f"--model={cfg.model} --schedule=linear_beta --seed=" in command
    assert str(tmp_path) not in command  # nothing of where the search ran
    assert workdir_lib.read_results(str(workdir))["export"] == str(workdir / "export" / "1")
    proc = testing.run_binary("ddss_sample", *command.split()[1:], f"--out={out}",
                              env=testing.binary_env(tmp_path), cwd=str(workdir))
    assert proc.returncode == 0, proc.stderr
    learned = np.load(out)["images"]
    assert len(learned) == cfg.final_samples
    rows = []
    for label, family, options in evaluation.BASELINES:
        source = sampling.from_family(family, num_steps=cfg.num_steps,
                                      **dict(models.options(cfg), **options))
        rows.append(sampling.draw(source, cfg.final_samples, evaluation.EVAL_SEED,
                                  cfg.final_samples)[0])
    rows.append(learned)
    labels = [r["sampler"] for r in results["records"] if r["role"] != "reference"]
    want = images.labelled_rows([r[:12] for r in rows], ncols=12, scale=4, labels=labels)
    png = tf.io.decode_png(tf.io.read_file(str(workdir / "samples" / "compare.png"))).numpy()
    np.testing.assert_array_equal(png[..., :want.shape[-1]], want)


_WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from ddss_tf.search import SearchConfig, run_search
    cfg = SearchConfig(**json.loads(sys.argv[1]))
    run_search(cfg, sys.argv[2], log=lambda *a: None)
""")


def test_two_multi_worker_processes_equal_the_single_device_global_batch(tmp_path):
    cfg = tiny_config(strategy="multi_worker", train_steps=2, checkpoint_every=100)
    cluster = workers.localhost_cluster(2)
    workdir = str(tmp_path / "run")
    procs = []
    for i in range(2):
        env = testing.binary_env(tmp_path, DDSS_TF_CACHE=str(tmp_path / f"cache{i}"),
                                 TF_CONFIG=workers.tf_config(cluster, i))
        procs.append(subprocess.Popen(
            [sys.executable, "-c", _WORKER, cfg.to_json(), workdir], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    with open(os.path.join(workdir, "coefficients.json")) as f:
        got = json.load(f)["variables"]
    assert not [d for d in os.listdir(workdir) if d.startswith(".worker")]  # the temp copies
    want, _, _ = _manual_steps(cfg, 2, replicas=2)
    assert len(got) == len(want)
    for g, w in zip(got.values(), want):
        np.testing.assert_allclose(np.asarray(g, np.float32), w, rtol=1e-4, atol=1e-6)
