"""Signals outside a training loop (ddss_tf.interrupt): the raising handlers, phases and their
line, the loop's flag handing back to them, and the writers a stop unwinds through leaving
nothing half-written. tests/faults_signals_test.py stops the real binaries at every phase."""

import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import checkpoints, files, interrupt, sampling


def _kill(sig):
    os.kill(os.getpid(), sig)


def test_a_signal_raises_signalled_naming_its_phases_and_the_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    with interrupt.handlers():
        with pytest.raises(interrupt.Signalled) as stopped:
            with interrupt.phase("the set-up"), interrupt.phase("a cell", context=True), \
                    interrupt.phase("the export", rerun="nothing was written"):
                _kill(signal.SIGHUP)
        assert interrupt.current() == ()  # every phase left as the exception passed
    assert {s: signal.getsignal(s) for s in interrupt.SIGNALS} == before
    e = stopped.value
    assert isinstance(e, KeyboardInterrupt) and not isinstance(e, Exception)
    assert (e.signal_name, e.exit_code) == ("SIGHUP", 129)
    assert [p.name for p in e.phases] == ["the set-up", "a cell", "the export"]
    assert interrupt.stop_message(e.signal_name, e.phases) == (
        "stopped by SIGHUP during the export (a cell): nothing was written")
    assert interrupt.stop_message("SIGTERM", e.phases[:2]) == (
        f"stopped by SIGTERM during a cell: {interrupt.RERUN}")
    assert "while starting" in interrupt.stop_message("SIGINT", ())


def test_pythons_own_keyboard_interrupt_is_given_its_phase():
    with pytest.raises(KeyboardInterrupt) as stopped:
        with interrupt.phase("sampling"):
            raise KeyboardInterrupt
    assert [p.name for p in stopped.value.phases] == ["sampling"]


def test_the_loops_flag_catches_sighup_and_hands_back_to_the_raising_handler():
    with interrupt.handlers():
        with interrupt.Catch() as stop:
            _kill(signal.SIGHUP)
            assert stop.received == "SIGHUP"  # a flag: nothing raised yet
            with pytest.raises(interrupt.Signalled):  # a second one: the handler outside
                _kill(signal.SIGHUP)
        with pytest.raises(interrupt.Signalled) as stopped:  # restored after the block
            _kill(signal.SIGTERM)
        assert stopped.value.exit_code == 143


def test_the_fault_injection_signals_at_the_first_phase_it_names(monkeypatch):
    monkeypatch.setenv(interrupt.SIGNAL_AT, "the cell DDIM:SIGTERM")
    with interrupt.handlers():
        with interrupt.phase("the cell UniPC, K = 2"):
            pass  # not this one
        with pytest.raises(interrupt.Signalled) as stopped:
            with interrupt.phase("the cell DDIM quadratic, K = 2", context=True):
                pytest.fail("the signal arrives as the phase is entered")
    assert stopped.value.signal_name == "SIGTERM"
    assert stopped.value.phases[-1].name == "the cell DDIM quadratic, K = 2"


def test_writers_a_stop_passes_through_leave_nothing(tmp_path):
    stop = interrupt.Signalled("SIGTERM")
    (tmp_path / "old.json").write_text("{}")
    for writer in (lambda: files.atomic_file(str(tmp_path / "old.json")),
                   lambda: files.atomic_path(str(tmp_path / "w.weights.h5")),
                   lambda: files.atomic_dir(str(tmp_path / "export"), lambda: "1")):
        with pytest.raises(interrupt.Signalled):
            with writer() as handle:
                if isinstance(handle, str):
                    open(handle, "w").write("half")
                elif hasattr(handle, "write"):
                    handle.write("half")
                else:
                    open(os.path.join(handle.tmp, "saved_model.pb"), "w").write("half")
                raise stop
    assert sorted(os.listdir(tmp_path)) == ["export", "old.json"]
    assert os.listdir(tmp_path / "export") == [] and (tmp_path / "old.json").read_text() == "{}"


def test_samples_are_written_both_or_neither(tmp_path, monkeypatch):
    real = files.write_bytes

    def png_stopped(path, data):
        if path.endswith(".png"):
            raise interrupt.Signalled("SIGHUP")
        real(path, data)

    monkeypatch.setattr(files, "write_bytes", png_stopped)
    images = np.zeros([2, 8, 8, 1], np.float32)
    with pytest.raises(interrupt.Signalled):
        sampling.write(str(tmp_path / "s.npz"), images, images.astype(np.uint8))
    assert os.listdir(tmp_path) == []


def test_a_checkpoint_save_that_fails_leaves_nothing_of_it(tmp_path, monkeypatch):
    directory = str(tmp_path / "ckpts")
    step = tf.Variable(1, dtype=tf.int64)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(step=step), directory, 3)
    checkpoints.save(manager, 1)

    def torn(checkpoint_number):  # as SaveV2 / the merge on a full disk leave them
        prefix = os.path.join(directory, f"ckpt-{checkpoint_number}")
        os.makedirs(prefix + "_temp")
        if not os.path.exists(prefix + ".index"):  # data merged, the index never written
            open(prefix + ".data-00000-of-00001", "w").close()
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(manager, "save", torn)
    with pytest.raises(tf.errors.ResourceExhaustedError):
        checkpoints.save(manager, 2)
    assert sorted(os.listdir(directory)) == ["checkpoint", "ckpt-1.data-00000-of-00001",
                                             "ckpt-1.index"]
    with pytest.raises(tf.errors.ResourceExhaustedError):  # the same number again: kept
        checkpoints.save(manager, 1)
    assert checkpoints.checkpoint_numbers(directory) == [1]
    checkpoints.verify(os.path.join(directory, "ckpt-1"))
