"""training/loop.py on a three-number model: resume, NaN stop, signals, agree_stop, the bar.

The model: w_{s+1} = 0.9 w_s + c(s), c(s) = (s, -s, s / 2) / 10, loss = sum(w^2). Its values
after n steps are computed independently in float64 numpy.
"""

import glob
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import checkpoints, interrupt, summaries
from ddss_tf.training import loop

_C = np.array([1.0, -1.0, 0.5])


def _expected(n):
    w = np.zeros(3)
    for s in range(n):
        w = 0.9 * w + _C * s / 10
    return w


class _Model:
    """A tf.Variable model, its step and checkpoint; `calls` records the step each
    step_fn call started from; `at[s]` runs before the step that ends at s."""

    def __init__(self, at=None, metrics=None):
        self.w = tf.Variable(tf.zeros([3]), name="w")
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.ckpt = tf.train.Checkpoint(step=self.step, w=self.w)
        self.calls, self.at, self.metrics = [], at or {}, metrics or {}

    def step_fn(self):
        s = int(self.step)
        self.calls.append(s)
        if s + 1 in self.at:
            self.at[s + 1]()
        self.w.assign(0.9 * self.w + tf.constant(_C, tf.float32) * float(s) / 10)
        self.step.assign_add(1)
        loss = tf.reduce_sum(tf.square(self.w))
        return {"loss": loss, **self.metrics.get(s + 1, {})}

    def run(self, directory, total=7, every=3, **kw):
        return loop.run(self.ckpt, self.step, total, self.step_fn, str(directory), every,
                        log=kw.pop("log", lambda *a: None), **kw)


def _numbers(directory):
    return checkpoints.checkpoint_numbers(str(directory))


def _saved_w(directory, n):
    return tf.train.load_checkpoint(os.path.join(str(directory), f"ckpt-{n}")).get_tensor(
        "w/.ATTRIBUTES/VARIABLE_VALUE")


def _sigint():
    os.kill(os.getpid(), signal.SIGINT)  # the real path: the handler Catch installed


def test_an_uninterrupted_run_ends_at_the_total_with_the_reference_values(tmp_path):
    m = _Model()
    last = m.run(tmp_path / "ckpt")
    assert m.calls == list(range(7)) and int(m.step) == 7
    np.testing.assert_allclose(m.w.numpy(), _expected(7), rtol=1e-6)
    assert last == str(tmp_path / "ckpt" / "ckpt-7")
    assert _numbers(tmp_path / "ckpt") == [7, 6, 3]  # every 3 steps and at the end
    np.testing.assert_allclose(_saved_w(tmp_path / "ckpt", 3), _expected(3), rtol=1e-6)


def test_an_interrupted_run_resumes_from_its_step_and_ends_like_an_uninterrupted_one(tmp_path):
    full = _Model()
    full.run(tmp_path / "full")
    first = _Model(at={4: _sigint})
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(interrupt.Interrupted) as stopped:
        first.run(tmp_path / "ckpt")
    assert str(stopped.value) == ("stopped by SIGINT at step 4; checkpoint saved, rerun the "
                                  "same command to resume")
    assert stopped.value.signal_name == "SIGINT" and stopped.value.exit_code == 130
    assert first.calls == [0, 1, 2, 3] and _numbers(tmp_path / "ckpt") == [4, 3]
    assert signal.getsignal(signal.SIGINT) is handler  # restored
    logged = []
    resumed = _Model()  # fresh variables: everything comes from the checkpoint
    resumed.run(tmp_path / "ckpt", log=logged.append)
    assert logged == [f"resumed from {tmp_path / 'ckpt' / 'ckpt-4'} at step 4"]
    assert resumed.calls == [4, 5, 6]
    np.testing.assert_array_equal(resumed.w.numpy(), full.w.numpy())
    np.testing.assert_allclose(resumed.w.numpy(), _expected(7), rtol=1e-6)


def test_a_finished_run_takes_no_step(tmp_path):
    _Model().run(tmp_path / "ckpt")
    again = _Model()
    again.run(tmp_path / "ckpt")
    assert again.calls == [] and int(again.step) == 7
    np.testing.assert_allclose(again.w.numpy(), _expected(7), rtol=1e-6)


@pytest.mark.parametrize("bad_at,every,last", [(4, 2, "ckpt-2"), (2, 3, None)])
def test_a_non_finite_metric_stops_without_saving_and_names_the_last_good_checkpoint(
        tmp_path, bad_at, every, last):
    m = _Model(metrics={bad_at: dict(grad_norm=float("inf"))})
    with pytest.raises(FloatingPointError) as err:
        m.run(tmp_path / "ckpt", every=every)
    good = str(tmp_path / "ckpt" / last) if last else "none yet (the run had not saved one)"
    assert str(err.value) == f"grad_norm became inf at step {bad_at}; last good checkpoint: {good}"
    assert _numbers(tmp_path / "ckpt") == ([2] if last else [])  # not at the NaN's step 4


def test_a_metric_left_out_of_check_finite_does_not_stop_the_run(tmp_path):
    m = _Model(metrics={2: dict(grad_norm=float("nan"))})
    m.run(tmp_path / "ckpt", check_finite=("loss",))
    assert int(m.step) == 7
    with pytest.raises(FloatingPointError, match="loss became nan at step 3"):
        _Model(metrics={3: dict(loss=float("nan"))}).run(tmp_path / "other",
                                                          check_finite=("loss",))


def test_a_floating_point_error_from_the_step_names_the_last_good_checkpoint(tmp_path):
    def boom():
        raise FloatingPointError("the loss is not finite at step 5; nothing was updated")

    m = _Model(at={6: boom})
    with pytest.raises(FloatingPointError) as err:
        m.run(tmp_path / "ckpt", every=2)
    assert str(err.value) == ("the loss is not finite at step 5; nothing was updated; last good "
                              f"checkpoint: {tmp_path / 'ckpt' / 'ckpt-4'}")
    assert isinstance(err.value.__cause__, FloatingPointError)
    assert _numbers(tmp_path / "ckpt") == [4, 2] and int(m.step) == 5


@pytest.mark.parametrize("at", [1, 2, 7])
def test_a_signal_saves_at_its_step_and_raises_interrupted(tmp_path, at):
    m = _Model()
    # The handler Catch installed, called directly, as the signal would.
    m.at[at] = lambda: signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
    with pytest.raises(interrupt.Interrupted) as stopped:
        m.run(tmp_path / "ckpt", stop_message="stopped with the cluster ({signal}) at step {step}")
    assert str(stopped.value) == f"stopped with the cluster (SIGTERM) at step {at}"
    assert stopped.value.exit_code == 143
    assert m.calls == list(range(at)) and _numbers(tmp_path / "ckpt")[0] == at
    np.testing.assert_allclose(_saved_w(tmp_path / "ckpt", at), _expected(at), rtol=1e-6)


def test_agree_stop_decides_for_every_worker(tmp_path):
    seen = []

    def agree(received):  # another worker's SIGTERM arrives after step 3; a local SIGINT at 2
        seen.append(received)
        return "SIGTERM" if len(seen) == 4 else None

    m = _Model(at={2: _sigint})
    with pytest.raises(interrupt.Interrupted) as stopped:
        m.run(tmp_path / "ckpt", agree_stop=agree)
    assert stopped.value.signal_name == "SIGTERM" and "at step 3" in str(stopped.value)
    assert seen == [None, None, "SIGINT", "SIGINT"]  # once before each step
    assert m.calls == [0, 1, 2] and _numbers(tmp_path / "ckpt") == [3]


def test_a_local_signal_the_workers_do_not_agree_on_does_not_stop(tmp_path):
    seen = []
    m = _Model(at={2: _sigint})
    m.run(tmp_path / "ckpt", agree_stop=lambda received: seen.append(received))
    assert int(m.step) == 7 and len(seen) == 7 + 2  # before each step, and after the last save


def test_restore_from_another_directory_and_save_into_its_own(tmp_path):
    _Model().run(tmp_path / "chief", total=4, every=10)
    before = sorted(os.listdir(tmp_path / "chief"))
    worker = _Model()
    worker.run(tmp_path / "own", restore_from=str(tmp_path / "chief"))
    assert worker.calls == [4, 5, 6] and _numbers(tmp_path / "own") == [7, 6]
    assert sorted(os.listdir(tmp_path / "chief")) == before
    np.testing.assert_allclose(worker.w.numpy(), _expected(7), rtol=1e-6)


def test_after_step_and_the_summary_writer(tmp_path):
    written, calls = [], []

    def after_step(step, metrics):
        calls.append((step, metrics["loss"]))
        written.append(bool(summaries.scalar("loss", metrics["loss"], step)))
        return None

    m = _Model()
    m.run(tmp_path / "ckpt", after_step=after_step, summary_dir=str(tmp_path / "tb"))
    losses = [float(np.sum(np.square(_expected(s)))) for s in range(1, 8)]
    assert [s for s, _ in calls] == list(range(1, 8)) and all(written)
    np.testing.assert_allclose([v for _, v in calls], losses, rtol=1e-5)
    events = [(e.step, float(tf.make_ndarray(v.tensor)))
              for f in glob.glob(str(tmp_path / "tb" / "*"))
              for e in tf.compat.v1.train.summary_iterator(f) for v in e.summary.value]
    assert [s for s, _ in events] == list(range(1, 8))
    np.testing.assert_allclose([v for _, v in events], losses, rtol=1e-5)
    written.clear()
    _Model().run(tmp_path / "ckpt2", after_step=after_step)  # no summary_dir: a no-op writer
    assert written == [False] * 7


def test_the_progress_bar_shows_the_chosen_metrics_and_after_steps_fields(tmp_path, capsys):
    m = _Model(metrics={s: dict(grad_norm=12345.0) for s in range(1, 8)})
    m.run(tmp_path / "ckpt", desc="search", bar_metrics=("loss",),
          after_step=lambda step, metrics: dict(fid=2.5) if step == 3 else None)
    err = capsys.readouterr().err
    assert err.startswith("search 0/7 [") and "compiling (step 1) ..." in err.splitlines()[0]
    final = [line for line in err.splitlines() if line.startswith("search 7/7")][0]
    loss = float(np.sum(np.square(_expected(7))))
    assert f"loss={loss:.4g}" in final and "fid=2.5" in final  # the fid stays on the bar
    assert "grad_norm" not in err and "12345" not in err
    assert "search done in" in err


def test_a_step_fn_that_does_not_advance_the_step_is_refused(tmp_path):
    step = tf.Variable(0, dtype=tf.int64)
    with pytest.raises(RuntimeError, match="from 0 to 0; it must advance it by exactly one"):
        loop.run(tf.train.Checkpoint(step=step), step, 3, lambda: None, str(tmp_path), 1,
                 log=lambda *a: None)
