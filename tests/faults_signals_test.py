"""SIGTERM, SIGHUP and SIGINT at every phase of every binary, with the real binaries on tiny
settings (README: "Exit codes and faults"): one line naming the phase and what a rerun does,
exit 128 + the signal's number, nothing half-written, and a rerun that resumes or starts clean.

Each stop is placed with the documented fault-injection hook (ddss_tf.interrupt: the process
signals itself as it enters the named phase); tests/faults_test.py sends real signals to a
running search.
"""

import glob
import json
import os
import signal

import numpy as np
import pytest

import testing
from search_helpers import toy_model
from ddss_tf import files, interrupt, sampling

_CODES = {signal.SIGHUP: 129, signal.SIGINT: 130, signal.SIGTERM: 143}


def _tiny():
    """ddss_search's flags for a search of seconds (as tests/faults_test.py's)."""
    return [f"--model={toy_model()}", "--schedule=linear_beta", "--num_steps=2", "--batch_size=8",
            "--noxla", "--eval_every=1000", "--eval_samples=16", "--validation_samples=16", "--final_samples=16",
            "--reference_steps=10", "--train_steps=2", "--checkpoint_every=1"]


def _stopped(proc, sig, phase, rerun=interrupt.RERUN):
    """The process exited with 128 + sig after one line naming sig, the phase and the rerun."""
    assert proc.returncode == _CODES[sig], (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if ": stopped: " in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert f"stopped by {sig.name} during {phase}" in lines[0], lines[0]
    assert lines[0].endswith(rerun), lines[0]
    return lines[0]


def _leftovers(*directories):
    """Temporary files of the atomic writers and of TensorFlow's checkpoints below directories."""
    found = []
    for d in directories:
        for path in glob.glob(os.path.join(str(d), "**"), recursive=True):
            name = os.path.basename(path)
            if name.startswith(files.TMP_PREFIX) or name.endswith("_temp") or ".tmp" in name:
                found.append(path)
    return found


def _signal_at(tmp_path, phase, sig):
    return testing.binary_env(tmp_path, **{interrupt.SIGNAL_AT: f"{phase}:{sig.name}"})


def _coefficients(workdir):
    with open(os.path.join(workdir, "coefficients.json")) as f:
        return json.load(f)["variables"]


# Every phase of ddss_search, in the order a run meets them: each rerun resumes past the phases
# finished before and stops at the next one. (phase named by the hook, signal, the line's phase)
_SEARCH_PHASES = [
    ("the set-up", signal.SIGTERM, "the set-up"),
    ("the reference statistics", signal.SIGHUP, "the reference statistics of digits/train"),
    ("the start screen", signal.SIGTERM, "the start screen"),
    ("the baselines", signal.SIGINT, "the baselines at K=2 on 16 samples"),
    ("training", signal.SIGHUP, "training"),
    ("the final comparison", signal.SIGTERM, "the final comparison"),
    ("the export", signal.SIGTERM, "the export to {workdir}/export (the final comparison)"),
    ("writing the results", signal.SIGHUP, "writing the results (the final comparison)"),
]


def test_a_search_stopped_at_every_phase_resumes_to_the_uninterrupted_result(tmp_path):
    flags = _tiny() + ["--init=auto"]
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    for phase, sig, named in _SEARCH_PHASES:
        proc = testing.run_binary("ddss_search", *flags, f"--workdir={workdir}",
                                  env=_signal_at(tmp_path, phase, sig))
        _stopped(proc, sig, named.format(workdir=workdir))
        assert not _leftovers(tmp_path), _leftovers(tmp_path)
        assert not (workdir / "results.json").exists()
        if phase == "the set-up":
            assert not workdir.exists()  # stopped before anything was written
        if phase == "the export":
            assert (workdir / "coefficients.json").exists()
            # no version: the export is written in a temporary directory, removed on the stop
            assert not (workdir / "export").exists() or not os.listdir(workdir / "export")
        if phase == "training":
            assert not glob.glob(str(workdir / "checkpoints" / "ckpt-*"))
    assert sorted(os.listdir(cache)) and (workdir / "start.json").exists()
    proc = testing.run_binary("ddss_search", *flags, f"--workdir={workdir}",
                              env=testing.binary_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(workdir / "results.json") as f:
        export_dir = json.load(f)["export"]
    assert os.path.isfile(os.path.join(workdir, export_dir, "saved_model.pb"))  # relative
    assert not _leftovers(tmp_path)

    reference = tmp_path / "reference"
    proc = testing.run_binary("ddss_search", *flags, f"--workdir={reference}",
                              env=testing.binary_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got, want = _coefficients(workdir), _coefficients(reference)
    assert sorted(got) == sorted(want)
    for name in got:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)


def test_a_binary_stopped_while_it_imports_says_so_in_one_line(tmp_path):
    proc = testing.run_binary("ddss_sample", "--family=ddim", f"--out={tmp_path}/s.npz",
                              env=_signal_at(tmp_path, "start-up", signal.SIGTERM))
    assert proc.returncode == 143 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "ddss_sample: stopped: stopped by SIGTERM while starting: nothing was written; rerun "
        "the command")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("phase,sig", [("loading the sampler", signal.SIGHUP),
                                       ("sampling", signal.SIGTERM),
                                       ("writing the samples", signal.SIGHUP)])
def test_ddss_sample_stopped_at_each_phase_writes_nothing(tmp_path, phase, sig):
    out = tmp_path / "out" / "s.npz"
    flags = ["--family=ddim", "--num_steps=2", "--num_samples=4", f"--out={out}"]
    proc = testing.run_binary("ddss_sample", *flags, env=_signal_at(tmp_path, phase, sig))
    _stopped(proc, sig, phase, rerun=sampling.RERUN)
    assert not os.listdir(out.parent), os.listdir(out.parent)


def test_a_benchmark_stopped_in_a_cell_writes_no_cell_and_resumes(tmp_path):
    workdir = tmp_path / "bench"
    flags = [f"--model={toy_model()}", "--schedule=linear_beta",
             "--samplers=ddim_quadratic,unipc", "--num_steps=2", "--num_samples=16", f"--workdir={workdir}"]
    proc = testing.run_binary("ddss_benchmark", *flags,
                              env=_signal_at(tmp_path, "the cell UniPC", signal.SIGTERM))
    _stopped(proc, signal.SIGTERM, "the cell UniPC")
    # the finished cell only
    assert sorted(os.listdir(workdir / "cells")) == ["ddim_quadratic_k2_n16.json"]
    assert not _leftovers(tmp_path) and not (workdir / "table.md").exists()
    proc = testing.run_binary("ddss_benchmark", *flags, env=testing.binary_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(workdir / "cells")) == ["ddim_quadratic_k2_n16.json",
                                                      "unipc_k2_n16.json"]
    assert (workdir / "table.md").exists()


def test_ddss_train_model_stopped_in_its_export_resumes_to_a_complete_model(tmp_path):
    workdir = tmp_path / "ddpm"
    flags = [f"--workdir={workdir}", "--train_steps=2", "--warmup_steps=0", "--batch_size=4",
             "--ch=8", "--ch_mult=1", "--num_res_blocks=1", "--attn_resolutions=",
             "--noxla", "--checkpoint_every=1", "--num_timesteps=10"]
    proc = testing.run_binary("ddss_train_model", *flags,
                              env=_signal_at(tmp_path, "the export of the model", signal.SIGHUP))
    _stopped(proc, signal.SIGHUP, f"the export of the model to {workdir}/model")
    assert not os.path.exists(workdir / "model" / "config.json") and not _leftovers(tmp_path)
    assert glob.glob(str(workdir / "checkpoints" / "ckpt-2.index"))
    proc = testing.run_binary("ddss_train_model", *flags, env=testing.binary_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout + proc.stderr
    assert sorted(os.listdir(workdir / "model")) == ["config.json", "model.weights.h5"]


def test_ddss_train_classifier_stopped_while_training_writes_nothing(tmp_path):
    from ddss_tf.training import classifier

    out = tmp_path / "classifier"
    proc = testing.run_binary("ddss_train_classifier", f"--out_dir={out}", "--epochs=1",
                              env=_signal_at(tmp_path, "training the classifier", signal.SIGHUP))
    _stopped(proc, signal.SIGHUP, "training the classifier", rerun=classifier.RERUN)
    assert os.listdir(out) == []  # checked writable first, then nothing written
