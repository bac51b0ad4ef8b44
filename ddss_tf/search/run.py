"""`ddss_search` as a library function: learn a sampler, evaluate it, write the work directory.

    results = run_search(SearchConfig(num_steps=10), "/tmp/ddss")

`run_search` checks the work directory (search.workdir), then builds a `Run`: the
context every step of a search reads (its config, work directory and log, the
evaluation.Evaluator of its model and data, the strategy, the sampler and its
Trainer), and calls its `train` and `finish`.
"""

import json
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from ddss_tf import evaluation, export, files, guidance, images, interrupt, models, summaries
from ddss_tf.evaluation import report
from ddss_tf.search import (objectives, plan, select as select_lib, start as start_lib,
                            strategies, workdir as workdir_lib)
from ddss_tf.search.trainer import Trainer
from ddss_tf.training import loop

__all__ = ["run_search", "Run"]

_now = time.monotonic  # the search clock (a test replaces it)


class Run:
    """One search, resolved from its config once.

    Attributes: cfg, workdir, log, chief (whether this process writes), strategy,
    evaluator (evaluation.Evaluator: model, data, feature networks, scorer), start (the
    search.start.Start the layer is built from), layer (the learnable sampler, in the
    strategy's scope), objective and trainer (search.Trainer).
    """

    def __init__(self, cfg, workdir, log=print, chief=True):
        self.cfg, self.workdir, self.log, self.chief = cfg, workdir, log, chief
        self.strategy = strategies.make(cfg.strategy, cfg.tpu, worker_timeout=cfg.worker_timeout)
        cfg.validate(self.strategy.num_replicas_in_sync)
        self.objective = objectives.get(cfg.objective)
        ks = (cfg.num_steps,) + tuple(self.objective.extra_num_steps(cfg))
        self.evaluator = ev = evaluation.Evaluator(cfg, self.log, num_steps=ks)
        if chief:
            self.log_plan()
        with interrupt.phase("the start screen"):
            self.start = start_lib.resolve(cfg, ev, self.path(workdir_lib.START), self.log)
        with self.strategy.scope():
            self.layer = cfg.build_sampler(ev.sampling_denoiser, self.start)
        if cfg.start_from:
            self._start_from(cfg.start_from)
        loss = self.objective.loss(cfg, ev, self.strategy.num_replicas_in_sync, self.log)
        self.trainer = Trainer(self.layer, ev.extractor, loss, self.strategy, cfg,
                               ev.image_shape)
        # A sampler across guidance scales is finally scored at every anchor ...
        anchors = cfg.guidance_anchors() or ()
        self.scale_evaluators = [ev.at_guidance_scale(w) for w in anchors]
        # ... and validated at the anchors and between them.
        validators = [ev.at_guidance_scale(w) for w in
                      guidance.validation_scales(anchors)] if anchors else [ev]
        self.selection = None if cfg.select == "last" else select_lib.Selection(
            cfg, self.layer, validators, self.log)

    def log_plan(self):
        """Log what the search will do and about how long each phase takes (search.plan)."""
        cfg, ev = self.cfg, self.evaluator
        steps = plan.phases(cfg, self.objective,
                            screen=not os.path.exists(self.path(workdir_lib.START)),
                            reference=not ev.reference_cached(cfg.final_samples),
                            schedule=ev.denoiser.schedule)
        rate = plan.forward_rate(ev)
        self.log(f"plan ({rate:,.0f} network evaluations / s measured here; training ones "
                 f"count {plan.TRAIN_COST:g}x):")
        for line in plan.lines(steps, rate):
            self.log(line)

    def _start_from(self, paths):
        """Start the layer from learned samplers' coefficients.json (SearchConfig.start_from):
        each checked against this model, then copied (a resumed run's checkpoint then replaces
        them)."""
        ev, anchors = self.evaluator, self.cfg.guidance_anchors()
        learned = [export.load_coefficients(p, ev.sampling_denoiser, remat=False) for p in paths]
        with self.strategy.scope():
            self.layer.start_from(learned)
        for j, path in enumerate(paths):
            scales = export.read_coefficients(path).get("guidance", {}).get("scale_range")
            searched = "" if not scales else " (searched at w " + (
                f"{scales[0]:g})" if scales[0] == scales[1] else f"{scales[0]:g}..{scales[1]:g})")
            at = ("every anchor" if len(paths) == 1 else f"anchor w={anchors[j]:g}") \
                if anchors else "the sampler"
            self.log(f"starting {at} from {path}{searched}")

    def path(self, *parts):
        return os.path.join(self.workdir, *parts)

    def baselines_file(self, tag, num_samples):
        """The cache of the baselines' scores at this K (tag: "eval" or "final")."""
        return self.path(workdir_lib.baselines_file(tag, num_samples))

    # ---- training ----
    def train(self, baselines):
        """Train (or resume) to cfg.train_steps on training.loop; baselines: {label: scores}
        drawn beside the periodic evaluation. Raises interrupt.Interrupted when a signal
        stopped it (on every worker at the same step)."""
        cfg, trainer, strategy = self.cfg, self.trainer, self.strategy
        state = dict(step=trainer.step, sampler=self.layer, optimizer=trainer.optimizer,
                     **trainer.loss.checkpointed())  # the loss's own variables (LD3's offsets)
        if self.selection is not None:
            state["best"] = self.selection.kept
        ckpt = tf.train.Checkpoint(**state)
        chief_dir = self.path(workdir_lib.CHECKPOINTS)
        # Every worker saves (the save is collective); only the chief's copy is kept. The others
        # write beside it and, like the chief, resume from the chief's latest checkpoint.
        own_dir = chief_dir if self.chief else self.path(
            f".worker{strategy.cluster_resolver.task_id}_checkpoints")

        def step_fn():  # the trainer checks for NaN / Inf before it updates anything
            loss, norm = trainer.train_step()
            return dict(loss=loss, grad_norm=norm)

        clock = self._search_clock()

        def evaluated(step):
            return step > 0 and (step % cfg.eval_every == 0 or step == cfg.train_steps)

        def after_restore(step):
            strategies.check_same_start(strategy, step, chief_dir)
            # The untrained sampler is a candidate too (a search never keeps worse than its
            # start); and a checkpoint is saved before its step's evaluation: a run resumed
            # from one validates the restored coefficients, which are that step's.
            if self.chief and self.selection is not None and (step == 0 or evaluated(step)) \
                    and int(self.selection.kept.considered) < step:
                self.selection.validate(step)

        def after_step(step, metrics):
            summaries.scalar("train/loss", metrics["loss"], step)
            summaries.scalar("train/grad_norm", metrics["grad_norm"], step)
            if step % cfg.checkpoint_every == 0:
                clock()
            if not self.chief or not evaluated(step):
                return None
            scores = self.evaluate_during_training(step)
            for label, base in baselines.items():
                summaries.scalar(f"eval/fid_{label.replace(' ', '_')}", base["fid"], step)
            shown = dict(fid=scores["fid"])
            if self.selection is not None:
                shown["best"] = self.selection.validate(step)
            return shown

        stopped = "stopped by {signal}" if self.chief else "stopped with the cluster ({signal})"
        try:
            loop.run(ckpt, trainer.step, cfg.train_steps, step_fn, own_dir, cfg.checkpoint_every,
                     restore_from=chief_dir, log=self.log if self.chief else (lambda *a: None),
                     after_restore=after_restore, after_step=after_step,
                     agree_stop=lambda received: strategies.agreed_stop(strategy, received),
                     summary_dir=self.path(workdir_lib.TENSORBOARD) if self.chief else None,
                     desc="search", bar_metrics=("loss",),
                     stop_message=stopped + " at step {step}; checkpoint saved, rerun the same "
                                            "command to resume")
        finally:
            clock()
            if not self.chief:
                shutil.rmtree(own_dir, ignore_errors=True)

    def _search_clock(self):
        """A function that writes workdir.SEARCH_COST: the seconds of earlier sessions plus this
        one's so far (chief only; a no-op on the other workers)."""
        if not self.chief:
            return lambda: None
        path, start = self.path(workdir_lib.SEARCH_COST), _now()
        earlier = self.search_seconds() or 0.0

        def clock():
            files.write_json(path, dict(seconds=earlier + _now() - start))

        return clock

    def search_seconds(self):
        """Wall time of the training loop over every session so far: None before the first,
        or when the file is damaged (named in the log; the run goes on, uncounted)."""
        cost = evaluation.read_cache(self.path(workdir_lib.SEARCH_COST), self.log)
        seconds = (cost or {}).get("seconds")
        return float(seconds) if isinstance(seconds, (int, float)) else None

    def network_evaluations(self):
        """Network evaluations of the search: train_steps x batch_size x K forward passes in
        its loss, each also differentiated (and, with remat, recomputed once in the backward
        pass), times the objective's chains per sample (`Objective.chains_per_sample`: a
        control variate's start chain, forward only), plus what it spends before training (a
        teacher's ld3_pairs x teacher_steps: `Objective.network_evaluations`); the periodic
        evaluations' samples are not counted. Classifier-free guidance at a scale > 0 (or across scales)
        evaluates the network on each sample twice, with and without its label."""
        cfg = self.cfg
        per_sample = 2 if _guided_calls(cfg) else 1
        return (cfg.train_steps * cfg.batch_size * cfg.num_steps * per_sample
                * self.objective.chains_per_sample(cfg) + self.objective.network_evaluations(cfg))

    def evaluate_during_training(self, step):
        """Scores of the learned sampler on cfg.eval_samples, to TensorBoard and samples/."""
        imgs = self.evaluator.sample(self.layer, self.cfg.eval_samples)
        scores = self.evaluator.score(imgs, f"the learned sampler at step {step}")
        for key in ("fid", "kid", "heldout_fid"):
            summaries.scalar(f"eval/{key}", scores[key], step)
        grid = images.make_grid(imgs[:64], ncols=8, scale=4)
        summaries.image("samples", grid, step)
        images.write_png(self.path(workdir_lib.SAMPLES, f"step_{step:06d}.png"), grid)
        return scores

    def redraw_command(self, batch):
        """The ddss_sample command, run in the work directory, that draws the evaluation's first
        batch of `batch` samples of the learned sampler: its model flags, and for a guided
        search the evaluation's labels (sample i asks for i mod C) at the main records' scale."""
        parts = ["ddss_sample", f"--coefficients={workdir_lib.COEFFICIENTS}",
                 *models.flags(self.cfg), f"--seed={evaluation.EVAL_SEED}",
                 f"--batch_size={batch}", f"--num_samples={batch}"]
        guidance = self.evaluator.guidance
        if guidance is not None:
            parts += [f"--labels={','.join(map(str, range(guidance.num_classes)))}",
                      f"--guidance_scale={self.cfg.evaluation_scale():g}"]
        return " ".join(parts)

    # ---- the final comparison ----
    def finish(self):
        """Final evaluation on cfg.final_samples, then coefficients, export and results (last:
        results.json marks the search finished)."""
        cfg, ev, n, k = self.cfg, self.evaluator, self.cfg.final_samples, self.cfg.num_steps
        selected = None if self.selection is None else self.selection.restore()
        if self.scale_evaluators:  # coefficients.json's coefficients and query_times: at w_max
            self.layer.set_guidance_scale(cfg.evaluation_scale())
        base_scores, base_images = ev.baselines(k, n, cache=self.baselines_file("final", n),
                                                keep_images=True)
        if cfg.init == start_lib.AUTO:  # the training-free sampler the search started from
            start = f"{self.start.describe()} (the start)"
            base_scores[start], base_images[start] = ev.sample_and_score(
                ev.baseline_layer(self.start.init, k, stride=self.start.stride), n, start)
        ref = ev.reference_scores(n)
        label = cfg.label()
        learned, learned_images = ev.sample_and_score(self.layer, n, label)
        records = [evaluation.record(lbl, k, s, "baseline") for lbl, s in base_scores.items()]
        records.append(evaluation.record(label, k, learned, "learned"))
        records.append(evaluation.record(ev.reference_label(), ev.reference_steps, ref,
                                         "reference"))
        images.write_png(self.path(workdir_lib.COMPARE),
                         report.compare_grid({**base_images, label: learned_images}))
        export.write_coefficients(self.layer, self.path(workdir_lib.COEFFICIENTS),
                                  model_fingerprint=ev.model_fingerprint, guidance=ev.guidance)
        export_dir = export.export_sampler(self.layer, self.path(workdir_lib.EXPORT),
                                           guidance=ev.guidance)
        best = min(r["fid"] for r in records if r["role"] == "baseline")
        # The real data themselves at this sample count: the floor of FID (KID is unbiased).
        floor, _ = ev.score_resampled_real(n)
        # results.json holds the export's path relative to the work directory (a moved or copied
        # search points at its own; workdir.read_results resolves it), the caller gets it whole.
        summary = dict(config=json.loads(cfg.to_json()), records=records,
                       export=os.path.relpath(export_dir, self.workdir),
                       fid_ratio_to_best_baseline=learned["fid"] / best,
                       training_data_resampled=dict(fid=floor["fid"], heldout=floor["heldout_fid"],
                                                    num_samples=n),
                       query_times=np.asarray(self.layer.query_times()).tolist(),
                       selected=selected, search_seconds=self.search_seconds(),
                       search_network_evaluations=self.network_evaluations())
        if self.scale_evaluators:
            summary["across_scales"] = self.score_across_scales(n, label)
        text = report.search_markdown(summary, self.cost_breakdown(),
                                      self.redraw_command(min(evaluation.BATCH_SIZE, n)))
        with interrupt.phase("writing the results"):
            with files.atomic_file(self.path(workdir_lib.REPORT)) as f:
                f.write(text)
            files.write_json(self.path(workdir_lib.RESULTS), summary)
        self.log("\n" + evaluation.markdown_table(records))
        return dict(summary, export=export_dir)

    def cost_breakdown(self):
        """What `network_evaluations` counts, for results.md."""
        cfg = self.cfg
        extra = self.objective.cost_text(cfg)
        return (f"{cfg.train_steps} steps x batch {cfg.batch_size} x K = {cfg.num_steps}"
                + (" x 2 (guidance: with and without the label)" if _guided_calls(cfg) else "")
                + " in the loss" + (f", {extra}" if extra else ""))

    def score_across_scales(self, num_samples, label):
        """A sampler across guidance scales at each anchor w: [{guidance_scale, records (the
        baselines and the learned sampler guided at w), fid_ratio_to_best_baseline}]."""
        out, k = [], self.cfg.num_steps
        for ev in self.scale_evaluators:
            w = ev.guidance.scale
            self.log(f"guidance scale {w:g}:")
            base = ev.baselines(k, num_samples,
                                cache=self.baselines_file(f"final_w{w:g}", num_samples))
            learned, _ = ev.sample_and_score(self.layer, num_samples, f"{label} at w={w:g}")
            recs = [evaluation.record(lbl, k, s, "baseline") for lbl, s in base.items()]
            recs.append(evaluation.record(f"{label} at w={w:g}", k, learned, "learned"))
            out.append(dict(guidance_scale=w, records=recs, fid_ratio_to_best_baseline=(
                learned["fid"] / min(s["fid"] for s in base.values()))))
        return out


def _guided_calls(cfg):
    """Whether the search's chain calls the network with and without the label (guidance at a
    scale > 0, or across scales)."""
    return max(cfg.guidance_scales() or (0.0,)) > 0


def _finished(workdir, results, log):
    log(f"{workdir} holds this finished search; results in "
        f"{os.path.join(workdir, workdir_lib.REPORT)}")
    return results


def run_search(cfg, workdir, log=print):
    """Run (or resume) a search in workdir. Returns the results dict (None on the non-chief
    workers of a multi-worker run). Raises interrupt.Interrupted when a signal stopped it
    (its checkpoint saved: the same call resumes).

    Order: the flags, the work directory's own config and a finished run's results are
    checked first (reading only, so a finished search prints its results from a read-only
    place); then the model and data are loaded and validated against the settings; only
    then is the work directory written, under a lock that keeps a second search out."""
    cfg.validate()
    workdir_lib.check_saved_config(workdir, cfg, log)
    chief = strategies.is_chief_task(cfg.strategy)
    finished = workdir_lib.finished_results(workdir, cfg)
    if finished:  # every worker returns at once; a collective would hang
        return _finished(workdir, finished, log) if chief else None
    if cfg.resolved():
        log(cfg.recipe_line())
    run = Run(cfg, workdir, log, chief=chief)  # validates the settings against the model
    if not chief:  # a non-chief worker only contributes its replicas' gradients
        os.makedirs(workdir, exist_ok=True)
        run.train({})
        return None
    files.writable_dir(workdir, "the work directory")
    with files.WorkdirLock(workdir):
        # Again under the lock: another search may have written here since the checks above.
        workdir_lib.check_saved_config(workdir, cfg, lambda *a: None)
        finished = workdir_lib.finished_results(workdir, cfg)
        if finished:
            return _finished(workdir, finished, log)
        workdir_lib.retire_results(workdir)
        workdir_lib.write_config(workdir, cfg)
        run.start.save(run.path(workdir_lib.START))
        log(f"{cfg.family} pred={cfg.pred} time={cfg.time} K={cfg.num_steps} on {cfg.model}; "
            f"{run.strategy.num_replicas_in_sync} replica(s); {cfg.train_steps} steps of batch "
            f"{cfg.batch_size}")
        baselines = run.evaluator.baselines(
            cfg.num_steps, cfg.eval_samples, cache=run.baselines_file("eval", cfg.eval_samples))
        run.train(baselines)
        with interrupt.phase("the final comparison", context=True):
            return run.finish()
