"""One resumable training loop: checkpoints, signals, a NaN stop, summaries and a progress bar.

    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    ckpt = tf.train.Checkpoint(step=step, model=model, optimizer=optimizer)

    def step_fn():                       # one optimiser step; it advances `step` by one
        loss = train_step(step)
        step.assign_add(1)
        return {"loss": loss}

    loop.run(ckpt, step, 1000, step_fn, os.path.join(workdir, "checkpoints"), 100,
             summary_dir=os.path.join(workdir, "tensorboard"))

`run` restores `ckpt` (and with it `step`) from the newest checkpoint that reads back
(`ddss_tf.checkpoints.open_manager`), calls `step_fn` until `step` reaches the total, and
saves every `checkpoint_every` steps and once more where it ends. What it guards against:

- a non-finite step: a FloatingPointError from `step_fn` (a trainer that checks before it
  updates anything) or a non-finite metric it returns (one that checks after) ends the run
  with a FloatingPointError naming the last good checkpoint; nothing is saved after it;
- a signal: SIGINT / SIGTERM / SIGHUP (`ddss_tf.interrupt.Catch`) stop the loop between two
  steps, after the step's checkpoint is saved; `run` then raises `interrupt.Interrupted`. Workers
  that must stop at the same step agree on it through `agree_stop`, which every worker calls
  the same number of times (once before the first step, once after each step, and once more
  after the final save unless they had already agreed to stop).

A resumed run continues the same sequence when `step_fn` draws its randomness from the
step (stateless RNG keyed on it), as the DDPM trainer and the search do.
"""

import math

import tensorflow as tf

from ddss_tf import checkpoints, interrupt, progress

__all__ = ["run", "STOP_MESSAGE", "NO_CHECKPOINT"]

STOP_MESSAGE = ("stopped by {signal} at step {step}; checkpoint saved, rerun the same command "
                "to resume")
NO_CHECKPOINT = "none yet (the run had not saved one)"


def run(ckpt, step, total_steps, step_fn, checkpoint_dir, checkpoint_every, *,
        restore_from=None, log=print, after_restore=None, after_step=None, agree_stop=None,
        summary_dir=None, desc="train", bar_metrics=None, check_finite=None,
        stop_message=STOP_MESSAGE):
    """Run (or resume) a training loop until `step` reaches `total_steps`.

    Args:
      ckpt: the tf.train.Checkpoint of everything a resumed run needs, `step` included.
      step: the int64 tf.Variable counting the steps done (restored with `ckpt`).
      total_steps: the step at which the run is finished.
      step_fn: step_fn() -> {name: float scalar} (or None): one step, which advances `step` by
        exactly one. It may raise FloatingPointError, best before it changes anything.
      checkpoint_dir: where the checkpoints are saved (ckpt-<step>).
      checkpoint_every: save every this many steps (>= 1); also saved where the loop ends.
      restore_from: the directory restored from (default: checkpoint_dir), e.g. the chief's
        checkpoints for a worker that saves into its own.
      log: log(message) for "resumed from <ckpt> at step N" and the checkpoints' messages.
      after_restore: after_restore(step) -> None, called once after restoring and before the
        first step (0 on a fresh run); e.g. a check that every worker resumed from one step.
      after_step: after_step(step, metrics) -> None or {name: value}, called after each step
        (and its checkpoint) inside the summary writer: summaries, periodic evaluation. The
        fields it returns stay on the progress bar until it returns them again.
      agree_stop: agree_stop(received) -> signal name or None: whether all workers stop now,
        given this process's signal ("SIGINT", "SIGTERM", "SIGHUP" or None). Default: the local signal.
      summary_dir: the tf.summary file writer's directory; None: a no-op writer.
      desc: the progress bar's label.
      bar_metrics: names of step_fn's metrics the bar shows (default: all).
      check_finite: names of step_fn's metrics that must be finite (default: all).
      stop_message: the Interrupted message, formatted with {signal} and {step}.

    Returns:
      The path of the checkpoint saved at the end (at `total_steps`).

    Raises:
      interrupt.Interrupted: a signal stopped the run (its checkpoint saved).
      FloatingPointError: a non-finite step; the message ends with
        "; last good checkpoint: <path or NO_CHECKPOINT>".
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    # A signal while restoring, or a second one during a step, stops it here (Signalled).
    with interrupt.phase("training"):
        return _run(ckpt, step, total_steps, step_fn, checkpoint_dir, checkpoint_every,
                    restore_from, log, after_restore, after_step, agree_stop, summary_dir, desc,
                    bar_metrics, check_finite, stop_message)


def _run(ckpt, step, total_steps, step_fn, checkpoint_dir, checkpoint_every, restore_from, log,
         after_restore, after_step, agree_stop, summary_dir, desc, bar_metrics, check_finite,
         stop_message):
    manager, latest = checkpoints.open_manager(ckpt, checkpoint_dir, log=log,
                                               restore_from=restore_from)
    if latest:
        log(f"resumed from {latest} at step {int(step)}")
    if after_restore is not None:
        after_restore(int(step))
    writer = (tf.summary.create_file_writer(summary_dir) if summary_dir
              else tf.summary.create_noop_writer())
    bar = progress.Progress(total_steps, initial=int(step), desc=desc, first="compiling")
    agree = agree_stop or (lambda received: received)
    shown = {}  # the fields after_step returned last
    with interrupt.Catch() as stop, writer.as_default():
        stopped = agree(stop.received)
        while not stopped and int(step) < total_steps:
            metrics = _one_step(step_fn, step, manager, check_finite)
            s = int(step)
            if s % checkpoint_every == 0:
                checkpoints.save(manager, s)
            shown.update((after_step(s, metrics) if after_step else None) or {})
            names = metrics if bar_metrics is None else bar_metrics
            bar.update(s, **{**{k: metrics[k] for k in names}, **shown})
            stopped = agree(stop.received)
        checkpoints.save(manager, int(step))
        stopped = stopped or agree(stop.received)  # a signal during the last save counts too
    bar.close()
    if stopped:
        raise interrupt.Interrupted(stopped, stop_message.format(signal=stopped, step=int(step)))
    return manager.latest_checkpoint


def _last_good(manager):
    return manager.latest_checkpoint or NO_CHECKPOINT


def _one_step(step_fn, step, manager, check_finite):
    """step_fn's metrics as floats, after checking that it advanced `step` by one and that the
    metrics in check_finite (default: all) are finite."""
    before = int(step)
    try:
        metrics = step_fn()
    except FloatingPointError as e:
        raise FloatingPointError(f"{e}; last good checkpoint: {_last_good(manager)}") from e
    after = int(step)
    if after != before + 1:
        raise RuntimeError(f"step_fn moved the step from {before} to {after}; it must advance "
                           "it by exactly one")
    metrics = {name: float(value) for name, value in (metrics or {}).items()}
    for name in metrics if check_finite is None else check_finite:
        if name not in metrics:
            raise KeyError(f"step_fn returned no metric {name!r} (check_finite names it)")
        if not math.isfinite(metrics[name]):
            raise FloatingPointError(f"{name} became {metrics[name]} at step {after}; "
                                     f"last good checkpoint: {_last_good(manager)}")
    return metrics
