"""Faults and bad input, with the real binaries on tiny settings: no traceback, no exit 0 on a
broken or unfinished result, no lost checkpoint (README: "Exit codes").

Read-only places: chmod for a normal user; as root (CI), which chmod does not stop, the
file system's immutable attribute (chattr +i), which does.
"""

import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import export_helpers
import testing
import toy_networks
import workers
from search_helpers import toy_model
from ddss_tf import checkpoints, files, images, sampling



def _tiny():
    """ddss_search's flags for a search of seconds: K = 2, batch 8, on the few-op toy network
    (search_helpers.toy_model; a process on the bundled UNet took 4x longer, mostly tracing)."""
    return [f"--model={toy_model()}", "--schedule=linear_beta", "--num_steps=2", "--batch_size=8",
            "--noxla", "--eval_every=1000", "--eval_samples=16", "--validation_samples=16", "--final_samples=16",
            "--reference_steps=10"]


def _one_line_error(proc, code, *phrases):
    """The process exited with `code` after one line on stderr naming every phrase."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def _digest(directory):
    """{relative path: sha1} of every file below directory."""
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "**"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha1(f.read()).hexdigest()
    return out


@contextlib.contextmanager
def _read_only(path):
    """Make `path` (and everything below it) unwritable for this user, then restore it."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-R", "+i", path], check=True)
        try:
            yield
        finally:
            subprocess.run(["chattr", "-R", "-i", path], check=True)
    else:
        modes = {}
        for root, dirs, names in os.walk(path):
            for p in [root] + [os.path.join(root, n) for n in names]:
                modes[p] = os.stat(p).st_mode
                os.chmod(p, modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                os.chmod(p, mode)


def _coefficients(workdir):
    with open(os.path.join(workdir, "coefficients.json")) as f:
        return json.load(f)["variables"]


# ---- checkpoints -------------------------------------------------------------------------------

def test_search_resumes_past_damage_and_never_overwrites_unreadable_checkpoints(tmp_path):
    env = testing.binary_env(tmp_path)
    flags = _tiny() + ["--train_steps=6", "--checkpoint_every=2"]
    full = str(tmp_path / "full")
    proc = testing.run_binary("ddss_search", *flags, f"--workdir={full}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The newest checkpoint cut short and the index file garbage: resume from ckpt-4, saying so.
    damaged = str(tmp_path / "damaged")
    shutil.copytree(full, damaged)
    for name in ("results.json", "results.md"):
        os.remove(os.path.join(damaged, name))
    data = os.path.join(damaged, "checkpoints", "ckpt-6.data-00000-of-00001")
    os.truncate(data, 10)
    with open(os.path.join(damaged, "checkpoints", "checkpoint"), "w") as f:
        f.write("garbage\n")
    proc = testing.run_binary("ddss_search", *flags, f"--workdir={damaged}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert f"checkpoint {data}" in out and "is damaged" in out
    assert "index file" in out and "rebuilding it" in out
    assert "resumed from" in out and "ckpt-4 at step 4" in out
    assert sorted(os.listdir(os.path.join(damaged, "checkpoints", "damaged"))) == [
        "ckpt-6.data-00000-of-00001", "ckpt-6.index"]
    assert _coefficients(damaged) == _coefficients(full)  # the same run, resumed

    # Nothing readable: refuse in one line, and every file stays as it was.
    broken = str(tmp_path / "broken")
    shutil.copytree(full, broken)
    for name in ("results.json", "results.md"):
        os.remove(os.path.join(broken, name))
    for index in glob.glob(os.path.join(broken, "checkpoints", "*.index")):
        open(index, "w").close()
    before = _digest(os.path.join(broken, "checkpoints"))
    proc = testing.run_binary("ddss_search", *flags, f"--workdir={broken}", env=env)
    _one_line_error(proc, 2, "none of the checkpoints", "nothing was overwritten")
    assert _digest(os.path.join(broken, "checkpoints")) == before

    # A finished search in a read-only place prints its results and writes nothing.
    before = _digest(full)
    with _read_only(full):
        proc = testing.run_binary("ddss_search", *flags, f"--workdir={full}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "holds this finished search" in proc.stdout + proc.stderr
    assert _digest(full) == before


# ---- exit codes ------------------------------------------------------------------------------

@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130),
                                      (signal.SIGHUP, 129)])
def test_a_stopped_search_saves_and_exits_non_zero(tmp_path, sig, code):
    workdir = str(tmp_path / "run")
    proc = subprocess.Popen(
        testing.binary_command("ddss_search", *_tiny(), "--train_steps=100000",
                               "--checkpoint_every=100000", f"--workdir={workdir}"),
        env=testing.binary_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    _wait_for_training(proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err
    assert f"ddss_search: stopped: stopped by {sig.name}" in err
    assert checkpoints.checkpoint_numbers(os.path.join(workdir, "checkpoints"))
    assert not os.path.exists(os.path.join(workdir, "results.json"))


# ---- bad input, checked before any work ------------------------------------------------------

@pytest.mark.parametrize("binary,flags,phrases", [
    ("ddss_search", ["--final_samples=8"], ["--final_samples=8", "8 is not integer >= 10"]),
    ("ddss_search", ["--eval_samples=8"], ["--eval_samples=8"]),
    ("ddss_search", ["--validation_samples=8"], ["--validation_samples=8"]),
    ("ddss_search", [f"--seed={2 ** 70}"], ["--seed"]),
    ("ddss_search", ["--schedule=linear_beta", "--num_timesteps=2000000000"],
     ["--num_timesteps"]),
    ("ddss_search", ["--num_steps=5000"],
     ["ddss_search: error: num_steps 5000 exceeds the model's T = 1000"]),
    ("ddss_search", ["--objective=kid_teacher", "--teacher_weight=-1"], ["--teacher_weight=-1"]),
    ("ddss_search", ["--objective=kid_teacher", "--family=unipc"],
     ["family 'unipc' has nothing to learn", "objective ld3"]),
    ("ddss_search", ["--dataset={data}", "--split=../outside"], ["no absolute path, no '..'"]),
    ("ddss_search", ["--dataset={data}", "--split=/etc"], ["no absolute path"]),
    ("ddss_sample", ["--family=ddim", "--num_samples=2000000000", "--out={tmp}/s.npz"],
     ["need", "GiB in memory"]),
    ("ddss_sample", ["--family=ddim", "--num_samples=2e9"], ["--num_samples=2e9"]),
    # NaN and Infinity in any float flag of any binary, before anything is written
    ("ddss_search", ["--learning_rate=nan"], ["--learning_rate=nan", "finite"]),
    ("ddss_search", ["--grad_clip=inf"], ["--grad_clip=inf", "finite"]),
    ("ddss_sample", ["--family=ddim", "--eta=-inf"], ["--eta=-inf"]),
    ("ddss_benchmark", ["--learning_rate=nan", "--workdir={tmp}/run"],
     ["--learning_rate=nan", "finite"]),
    ("ddss_train_model", ["--learning_rate=inf", "--workdir={tmp}/run"],
     ["--learning_rate=inf", "finite"]),
])
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, binary, flags, phrases):
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    images.write_png(str(data / "a.png"), np.zeros([8, 8, 1], np.uint8))
    workdir = tmp_path / "run"
    flags = [f.format(data=tmp_path / "data", tmp=tmp_path) for f in flags]
    extra = [f"--workdir={workdir}"] if binary == "ddss_search" else []
    proc = testing.run_binary(binary, *flags, *extra, env=testing.binary_env(tmp_path),
                              timeout=300)
    _one_line_error(proc, 2, *phrases)
    assert not workdir.exists() and not (tmp_path / "s.npz").exists()


def test_unusable_paths_are_one_line_naming_the_path(tmp_path):
    env = testing.binary_env(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    proc = testing.run_binary("ddss_search", *_tiny(), f"--workdir={a_file}", env=env)
    _one_line_error(proc, 2, str(a_file), "not a directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    with _read_only(str(locked)):
        proc = testing.run_binary("ddss_search", *_tiny(), f"--workdir={locked}/run", env=env)
        _one_line_error(proc, 2, f"{locked}/run")
        proc = testing.run_binary("ddss_sample", "--family=ddim", "--num_samples=100000",
                                  f"--out={locked}/s.npz", env=env)
        _one_line_error(proc, 2, str(locked), "not writable")
        assert "sample 1" not in proc.stderr  # refused before sampling
    # A read-only cache: the reference statistics cannot be cached there.
    cache = tmp_path / "ro_cache"
    cache.mkdir()
    with _read_only(str(cache)):
        proc = testing.run_binary("ddss_search", *_tiny(), "--train_steps=1",
                                  f"--workdir={tmp_path}/w",
                                  env=dict(env, DDSS_TF_CACHE=str(cache)))
    _one_line_error(proc, 2, str(cache))


def test_a_second_search_on_a_busy_work_directory_refuses_and_a_stale_lock_does_not_block(
        tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from ddss_tf import files\n"
        "with files.WorkdirLock(sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(600)\n"), workdir],
        env=testing.binary_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(files.WorkdirBusy, match=f"pid {holder.pid}"):
            with files.WorkdirLock(workdir):
                pass
        proc = testing.run_binary("ddss_search", *_tiny(), "--train_steps=1",
                                  f"--workdir={workdir}", env=testing.binary_env(tmp_path))
        _one_line_error(proc, 2, workdir, "is in use by", f"pid {holder.pid}")
        assert not os.path.exists(os.path.join(workdir, "config.json"))
    finally:
        holder.kill()  # SIGKILL: the lock file stays, its lock goes with the process
        holder.wait()
    assert os.path.exists(os.path.join(workdir, files.WorkdirLock.NAME))
    with files.WorkdirLock(workdir):
        pass


# ---- broken numbers --------------------------------------------------------------------------

def test_non_finite_samples_or_scores_exit_3_and_write_nothing(tmp_path):
    model = str(tmp_path / "nan.keras")
    toy_networks.nan_eps_model().save(model)
    env = testing.binary_env(tmp_path)
    out = tmp_path / "s.npz"
    proc = testing.run_binary("ddss_sample", "--family=ddim", "--num_steps=2", "--num_samples=4",
                              f"--model={model}", "--schedule=linear_beta", f"--out={out}", env=env)
    _one_line_error(proc, 3, "non-finite", "nothing written")
    assert not out.exists() and not (tmp_path / "s.png").exists()
    workdir = tmp_path / "run"
    proc = testing.run_binary("ddss_search", *_tiny(), "--train_steps=2", f"--model={model}",
                              "--schedule=linear_beta", f"--workdir={workdir}", env=env)
    _one_line_error(proc, 3, "NaN / Inf", "nothing scored or written")
    assert not (workdir / "results.json").exists() and not (workdir / "coefficients.json").exists()


@pytest.fixture(scope="module")
def coefficients_doc():
    return export_helpers.digits_coefficients_document()


def test_a_broken_coefficients_file_through_the_binary(tmp_path, coefficients_doc):
    doc = json.loads(json.dumps(coefficients_doc))
    doc["variables"][next(iter(doc["variables"]))] = float("inf")
    path = tmp_path / "coefficients.json"
    path.write_text(json.dumps(doc))
    proc = testing.run_binary("ddss_sample", f"--coefficients={path}", f"--out={tmp_path}/s.npz",
                              env=testing.binary_env(tmp_path))
    _one_line_error(proc, 2, str(path), "Infinity")
    assert not (tmp_path / "s.npz").exists()


# ---- first contact ---------------------------------------------------------------------------

@pytest.mark.parametrize("binary,own", [
    ("ddss_search", ["--workdir", "--num_steps", "--family", "--train_steps", "--model"]),
    ("ddss_sample", ["--sampler", "--coefficients", "--num_samples", "--out"]),
    ("ddss_benchmark", ["--workdir", "--num_steps", "--num_samples"]),
    ("ddss_train_model", ["--workdir", "--train_steps"]),
    ("ddss_train_classifier", ["--out_dir"]),
])
def test_help_lists_the_binarys_own_flags_and_usage_without_start_up_noise(tmp_path, binary,
                                                                          own):
    proc = testing.run_binary(binary, "--help", env=testing.binary_env(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.lstrip().splitlines()[0]  # the docstring: what the binary does
    for flag in own:
        assert f"  {flag}:" in text or f"  {flag.replace('--', '--[no]')}:" in text, flag
    assert binary in text  # the usage examples
    for noise in ("oneDNN", "absl::InitializeLog", "cpu_feature_guard"):
        assert noise not in proc.stderr




# ---- two localhost workers -------------------------------------------------------------------

def _start_workers(tmp_path, workdir, flags, caches=None, workdirs=None, only=(0, 1)):
    """Start the workers `only` of a two-worker localhost cluster (each its own cache;
    `workdirs` overrides --workdir per worker)."""
    cluster = workers.localhost_cluster(2)
    procs = []
    for i in only:
        env = testing.binary_env(tmp_path, TF_CONFIG=workers.tf_config(cluster, i),
                                 DDSS_TF_CACHE=(caches or {}).get(i, str(tmp_path / f"cache{i}")))
        procs.append(subprocess.Popen(
            testing.binary_command("ddss_search", *_tiny(), "--strategy=multi_worker",
                                   "--lr_decay=constant",
                                   f"--workdir={(workdirs or {}).get(i, workdir)}", *flags),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _wait_for_training(proc):
    """Read proc's stderr until its progress bar reports a trained step (a loss)."""
    for line in proc.stderr:
        if line.startswith("search ") and "loss=" in line:
            return


def _finish(proc, timeout):
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_two_workers_stop_together_fail_together_and_resume(tmp_path):
    # (a) The chief fails before training (its cache is read-only): the other worker, already
    # waiting in its first collective, exits non-zero with one line instead of hanging.
    ro_cache = tmp_path / "ro_cache"
    ro_cache.mkdir()
    with _read_only(str(ro_cache)):
        procs = _start_workers(tmp_path, str(tmp_path / "a"), ["--train_steps=5"],
                               caches={0: str(ro_cache)})
        chief = _finish(procs[0], timeout=300)
        other = _finish(procs[1], timeout=120)  # bounded: well before any collective timeout
    _one_line_error(chief, 2, str(ro_cache))
    _one_line_error(other, 4, "lost contact with another worker")

    # (b) SIGTERM to the non-chief mid-training: both save at the same step and exit 143.
    workdir = str(tmp_path / "run")
    long = ["--train_steps=100000", "--checkpoint_every=100000"]
    procs = _start_workers(tmp_path, workdir, long)
    _wait_for_training(procs[0])
    procs[1].send_signal(signal.SIGTERM)
    results = [_finish(p, timeout=300) for p in procs]
    for proc in results:
        assert proc.returncode == 143, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
    numbers = checkpoints.checkpoint_numbers(os.path.join(workdir, "checkpoints"))
    assert len(numbers) == 1 and numbers[0] > 0
    stopped_at = numbers[0]

    # (c) SIGKILL of the non-chief: the chief exits 4 within a bounded time, the checkpoint
    # of (b) is kept.
    procs = _start_workers(tmp_path, workdir, long)
    _wait_for_training(procs[0])
    procs[1].kill()
    procs[1].wait()
    _one_line_error(_finish(procs[0], timeout=120), 4, "lost contact")
    assert checkpoints.checkpoint_numbers(os.path.join(workdir, "checkpoints")) == [stopped_at]
    checkpoints.verify(os.path.join(workdir, "checkpoints", f"ckpt-{stopped_at}"))

    # (d) A worker that cannot see the chief's checkpoints (no shared file system) would start
    # from step 0 under the chief's resumed run: both refuse in one line instead.
    procs = _start_workers(tmp_path, workdir, long, workdirs={1: str(tmp_path / "elsewhere")})
    for proc in [_finish(p, timeout=300) for p in procs]:
        _one_line_error(proc, 2, "resumed from different steps", "shared file system")

    # (e) A worker that never starts: the other gives up after --worker_timeout (killed by
    # its watchdog: TensorFlow's wait for the cluster cannot be interrupted from inside).
    (alone,) = _start_workers(tmp_path, workdir, long + ["--worker_timeout=10"], only=(0,))
    _one_line_error(_finish(alone, timeout=120), -signal.SIGKILL, "did not form within 10 s")

    # (f) A worker that hangs (SIGSTOP) mid-training: the other's collective times out.
    procs = _start_workers(tmp_path, workdir, long + ["--worker_timeout=30"])
    _wait_for_training(procs[0])
    procs[1].send_signal(signal.SIGSTOP)
    try:
        _one_line_error(_finish(procs[0], timeout=180), 4, "lost contact")
    finally:
        procs[1].kill()
        procs[1].wait()

    # A rerun of both resumes and ends where one uninterrupted run with the same two
    # replicas (one process, two CPU devices) ends.
    total = checkpoints.checkpoint_numbers(os.path.join(workdir, "checkpoints"))[0] + 2
    procs = _start_workers(tmp_path, workdir, [f"--train_steps={total}",
                                               "--checkpoint_every=100000"])
    for proc in [_finish(p, timeout=600) for p in procs]:
        assert proc.returncode == 0, proc.stderr[-3000:]
    reference = str(tmp_path / "reference")
    proc = testing.run_binary("ddss_search", *_tiny(), "--strategy=mirrored", "--cpu_devices=2",
                              "--lr_decay=constant", f"--train_steps={total}",
                              "--checkpoint_every=100000", f"--workdir={reference}",
                              env=testing.binary_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got, want = _coefficients(workdir), _coefficients(reference)
    assert sorted(got) == sorted(want)
    for name in got:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6)


def test_the_exported_from_noise_refuses_noise_of_another_shape(tmp_path):
    from ddss_tf import export

    source = sampling.from_family("ddpm", num_steps=3)
    loaded = tf.saved_model.load(export.export_sampler(source.layer, str(tmp_path)))
    from_noise = loaded.signatures["from_noise"]  # as TF Serving calls it
    x_T = tf.zeros([2, 8, 8, 1])
    for shape in ([4, 2, 8, 8, 1], [2, 2, 8, 8, 1], [3, 3, 8, 8, 1], [3, 1, 8, 8, 1]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="K = 3 .* N = the batch of x_T"):
            from_noise(x_T=x_T, noise=tf.zeros(shape))
        with pytest.raises(ValueError, match="noise must"):
            source.from_noise(x_T, tf.zeros(shape))
    images, _ = source.from_noise(x_T, tf.zeros([3, 2, 8, 8, 1]))
    np.testing.assert_array_equal(from_noise(x_T=x_T, noise=tf.zeros([3, 2, 8, 8, 1]))["images"],
                                  images)
