"""`ddss_search` as a library function: learn a sampler, evaluate it, write the work directory.

Work directory:
  config.json          the SearchConfig (a resumed run must match it)
  checkpoints/         tf.train.CheckpointManager: step, sampler variables, Adam state
  tensorboard/         loss, grad norm, periodic FID / KID next to the baselines, sample grids
  samples/*.png        learned samples during training; compare.png (baselines vs learned)
  coefficients.json    the learned sampler (export.write_coefficients)
  export/<version>/    SavedModel (export.export_sampler)
  results.json / .md   written last: their presence marks a finished run
"""

import json
import os
import shutil

import tensorflow as tf

from ddss_tf import checkpoints, files, images, interrupt, progress, summaries
from ddss_tf.search import components, evaluation, report, strategies
from ddss_tf.search.config import SearchConfig
from ddss_tf.search.trainer import Trainer

__all__ = ["run_search", "Setup", "differing_settings"]


def _with_defaults(saved):
    """A config dict read from a work directory, with the defaults of settings added since
    it was written (a run from before the model options keeps resuming)."""
    return None if saved is None else dict(json.loads(SearchConfig().to_json()), **saved)


# Settings that change how a run is watched, not the sampler it learns.
_BOOKKEEPING = {"eval_every", "checkpoint_every", "final_samples", "eval_samples", "worker_timeout"}


def differing_settings(saved, cfg, resume=False):
    """Sorted names of the settings in which a saved config dict (config.json, or a
    results.json's "config") learns another sampler than cfg. resume=True: as a resumed run
    sees it (with a constant learning rate, more train_steps continue the same run)."""
    saved = _with_defaults(saved) or {}
    ignore = set(_BOOKKEEPING)
    if resume and cfg.lr_decay == "constant":  # a cosine schedule's length is part of the trajectory
        ignore.add("train_steps")
    return sorted(k for k, v in json.loads(cfg.to_json()).items()
                  if k not in ignore and saved.get(k) != v)


def _read_saved_config(workdir, cfg):
    """Refuse a work directory that holds another search (read only: nothing is written).

    Its config.json must learn the same sampler; checkpoints without a config.json belong
    to a run no one can name, so they are not resumed (nor overwritten)."""
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        diff = differing_settings(files.read_json(path, "search config", dict), cfg, resume=True)
        if diff:
            raise ValueError(f"{workdir} holds a search with different {', '.join(diff)}; "
                             "use a new --workdir, or the same settings to resume")
    elif checkpoints.checkpoint_numbers(os.path.join(workdir, "checkpoints")):
        raise ValueError(f"{workdir}/checkpoints holds checkpoints but {path} is missing, so "
                         "their settings are unknown; restore config.json or use a new --workdir")


def _write_config(workdir, cfg):
    """config.json, rewritten only when it changes (a bookkeeping setting), atomically."""
    path = os.path.join(workdir, "config.json")
    text = cfg.to_json()
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    with files.atomic_file(path) as f:
        f.write(text)


class Setup(evaluation.EvalSetup):
    """Everything a search needs, resolved from the config once: the evaluation setup plus
    the strategy, the learnable sampler and its trainer."""

    def __init__(self, cfg, log):
        self.strategy = strategies.make(cfg.strategy, cfg.tpu, worker_timeout=cfg.worker_timeout)
        cfg.validate(self.strategy.num_replicas_in_sync)
        super().__init__(cfg, log, num_steps=(cfg.num_steps,))
        with self.strategy.scope():
            self.layer = components.build_sampler(cfg, self.denoiser)
        self.trainer = Trainer(self.layer, self.extractor, self.reference.features, self.strategy,
                               cfg, self.image_shape)


def _evaluate_during_training(setup, cfg, step, workdir):
    imgs = evaluation.sample(setup.layer, cfg.eval_samples, setup.image_shape)
    scores = report.checked_scores(setup.scorer(imgs), f"the learned sampler at step {step}")
    for key in ("fid", "kid", "heldout_fid"):
        summaries.scalar(f"eval/{key}", scores[key], step)
    grid = images.make_grid(imgs[:64], ncols=8, scale=4)
    summaries.image("samples", grid, step)
    images.write_png(os.path.join(workdir, "samples", f"step_{step:06d}.png"), grid)
    return scores


def _train(setup, cfg, workdir, baselines, log, chief=True):
    trainer = setup.trainer
    ckpt = tf.train.Checkpoint(step=trainer.step, sampler=setup.layer, optimizer=trainer.optimizer)
    chief_dir = os.path.join(workdir, "checkpoints")
    # Every worker saves (the save is collective); only the chief's copy is kept. The others
    # write beside it and, like the chief, resume from the chief's latest checkpoint.
    own_dir = chief_dir if chief else os.path.join(
        workdir, f".worker{setup.strategy.cluster_resolver.task_id}_checkpoints")
    manager, latest = checkpoints.open_manager(ckpt, own_dir, log=log, restore_from=chief_dir)
    if latest:
        log(f"resumed from {latest} at step {int(trainer.step)}")
    _check_same_start(setup.strategy, int(trainer.step), chief_dir)
    writer = (tf.summary.create_file_writer(os.path.join(workdir, "tensorboard")) if chief
              else tf.summary.create_noop_writer())
    bar = progress.Progress(cfg.train_steps, initial=int(trainer.step), desc="search",
                            first="compiling")
    stopped = None
    with interrupt.Catch() as stop, writer.as_default():
        while int(trainer.step) < cfg.train_steps and not stopped:
            try:
                loss, norm = trainer.train_step()
            except FloatingPointError as e:
                last = manager.latest_checkpoint or "none yet (the run had not saved one)"
                raise FloatingPointError(f"{e}; last good checkpoint: {last}") from e
            step = int(trainer.step)
            summaries.scalar("train/loss", loss, step)
            summaries.scalar("train/grad_norm", norm, step)
            bar.update(step, loss=loss)
            if step % cfg.checkpoint_every == 0:
                manager.save(checkpoint_number=step)
            if chief and (step % cfg.eval_every == 0 or step == cfg.train_steps):
                scores = _evaluate_during_training(setup, cfg, step, workdir)
                for label, base in baselines.items():
                    summaries.scalar(f"eval/fid_{label.replace(' ', '_')}", base["fid"], step)
                bar.update(step, force=True, loss=loss, fid=scores["fid"])
            stopped = _agreed_stop(setup.strategy, stop.received)
        manager.save(checkpoint_number=int(trainer.step))
    bar.close()
    if not chief:
        shutil.rmtree(own_dir, ignore_errors=True)
    return stopped


_SIGNALS = (None, "SIGINT", "SIGTERM")


def _multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        getattr(strategy.cluster_resolver, "task_type", None) is not None


def _sum_over_workers(strategy, values):
    """The float64 sum over every replica of every worker of `values` (the same on each)."""
    local = tf.constant(values, tf.float64)
    per_replica = strategy.run(lambda: tf.identity(local))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()


def _check_same_start(strategy, step, chief_dir):
    """Every worker must resume from the same step: a worker that cannot see the chief's
    checkpoints (no shared file system) would start again from step 0 and feed gradients of
    other coefficients into the chief's run. The workers all-reduce their steps first."""
    if not _multi_worker(strategy):
        return
    count, total, squares = _sum_over_workers(strategy, [1.0, step, float(step) ** 2])
    if squares * count != total * total:  # not all equal
        raise ValueError(
            f"the workers resumed from different steps (this one from step {step}, the mean is "
            f"{total / count:g}): every worker must see the chief's checkpoints in {chief_dir}; "
            "give all of them the same --workdir on a shared file system")


def _agreed_stop(strategy, received):
    """The signal that stops every worker after this step, or None.

    One worker's SIGTERM must stop all of them at the same step: a worker that left the
    loop alone would leave the others waiting in the next step's collectives. So on a
    multi-worker strategy the workers all-reduce which signals they received (SIGTERM wins
    over SIGINT), and every worker saves and stops together. One process: its own signal.
    """
    if not _multi_worker(strategy):
        return received
    total = _sum_over_workers(strategy, [float(received == name) for name in _SIGNALS])
    for name in reversed(_SIGNALS[1:]):
        if total[_SIGNALS.index(name)] > 0:
            return name
    return None


def _finished_results(workdir, cfg):
    """The results of a finished run with these settings, or None (read only)."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return None
    results = files.read_json(path, "results file", dict)
    saved = results.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds no search config; it is damaged: move it away")
    # Every setting counts (more steps or another final evaluation is not finished yet), except
    # how long workers wait for each other.
    mine = json.loads(cfg.to_json())
    if {k: v for k, v in _with_defaults(saved).items() if k not in _NOT_RESULTS} == \
            {k: v for k, v in mine.items() if k not in _NOT_RESULTS}:
        return results
    return None


_NOT_RESULTS = {"worker_timeout"}


def _retire_results(workdir):
    """A finished run asked for more steps or another final evaluation stops looking finished
    until it is: its results are kept as results.previous.*."""
    for name in ("results.json", "results.md"):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            stem, ext = os.path.splitext(name)
            os.replace(path, os.path.join(workdir, f"{stem}.previous{ext}"))


def run_search(cfg, workdir, log=print):
    """Run (or resume) a search in workdir. Returns the results dict (None on the non-chief
    workers of a multi-worker run). Raises interrupt.Interrupted when a signal stopped it
    (its checkpoint saved: the same call resumes).

    Order: the flags, the work directory's own config and a finished run's results are
    checked first (reading only, so a finished search prints its results from a read-only
    place); then the model and data are loaded and validated against the settings; only
    then is the work directory written, under a lock that keeps a second search out."""
    cfg.validate()
    _read_saved_config(workdir, cfg)
    chief = strategies.is_chief_task(cfg.strategy)
    finished = _finished_results(workdir, cfg)
    if finished:  # every worker returns at once; a collective would hang
        if chief:
            log(f"{workdir} holds this finished search; results in {workdir}/results.md")
            return finished
        return None
    setup = Setup(cfg, log)  # validates the settings against the model before any write
    if not chief:  # a non-chief worker only contributes its replicas' gradients
        os.makedirs(workdir, exist_ok=True)
        stopped = _train(setup, cfg, workdir, {}, lambda *a: None, chief=False)
        if stopped:
            raise interrupt.Interrupted(stopped, f"stopped with the cluster ({stopped}) at step "
                                        f"{int(setup.trainer.step)}; checkpoint saved, rerun "
                                        "the same command to resume")
        return None
    files.writable_dir(workdir, "the work directory")
    with files.WorkdirLock(workdir):
        # Again under the lock: another search may have written here since the checks above.
        _read_saved_config(workdir, cfg)
        finished = _finished_results(workdir, cfg)
        if finished:
            log(f"{workdir} holds this finished search; results in {workdir}/results.md")
            return finished
        _retire_results(workdir)
        _write_config(workdir, cfg)
        log(f"{cfg.family} pred={cfg.pred} time={cfg.time} K={cfg.num_steps} on {cfg.model}; "
            f"{setup.strategy.num_replicas_in_sync} replica(s); {cfg.train_steps} steps of batch "
            f"{cfg.batch_size}")
        baselines = report.baselines(setup, cfg, workdir, cfg.eval_samples, "eval", log)
        stopped = _train(setup, cfg, workdir, baselines, log)
        if stopped:
            raise interrupt.Interrupted(stopped, f"stopped by {stopped} at step "
                                        f"{int(setup.trainer.step)}; checkpoint saved, rerun "
                                        "the same command to resume")
        return report.finish(setup, cfg, workdir, log)
