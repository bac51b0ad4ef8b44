"""Train a base DDPM with L_simple (Ho et al. 2020, Algorithm 1), or a rectified-flow model.

loss = E_{x_0, t ~ U{0..T-1}, eps ~ N(0, I)} || eps - eps_theta(alpha_t x_0 + sigma_t eps, t) ||^2

On a rectified-flow schedule (`schedules.RectifiedFlow`, "flow" prediction) the objective is
conditional flow matching (Lipman et al. 2023; Liu et al. 2023; Esser et al. 2024): with real
t ~ U[0, T - 1] (flow time u = (t + 1) / (T + 1) uniform, then SD3's shift: s = flow_sigma(t)),

loss = E || (eps - x_0) - v_theta((1 - s) x_0 + s eps, time_scale s) ||^2,

the network called as every flow model is (`denoisers.network_inputs`).

Adam with linear warm-up then cosine decay, global-norm gradient clipping, an
exponential moving average (EMA) of the weights (the EMA weights are what gets
exported), XLA. Every batch is drawn with stateless RNG keyed on (seed, step), so a run resumed
from a checkpoint continues the exact same sequence.

With `net["num_classes"]` = N > 0 the network is class-conditional and trains on the data's
labels, each replaced by the null label N with probability `label_dropout`, so that one network
gives both predictions of classifier-free guidance (Ho & Salimans 2022).

Work directory: config.json, checkpoints/, tensorboard/, model/ (the export:
config.json + model.weights.h5, loadable with `ddss_tf.pretrained.load_ddpm`).
"""

import collections
import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from ddss_tf import data, denoisers, files, interrupt, schedules, summaries
from ddss_tf.nets import unet
from ddss_tf.training import loop

__all__ = ["TrainConfig", "train", "export_model", "heldout_loss", "num_classes", "prediction",
           "training_pair"]


@dataclasses.dataclass
class TrainConfig:
    dataset: str = "digits"
    net: dict = dataclasses.field(default_factory=lambda: dict(unet.DIGITS_CONFIG))
    schedule: dict = dataclasses.field(
        default_factory=lambda: schedules.linear_beta().get_config())
    batch_size: int = 128
    train_steps: int = 12000
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    label_dropout: float = 0.1  # class-conditional nets only: P(label -> the null label)
    seed: int = 0
    xla: bool = True
    checkpoint_every: int = 1000
    log_every: int = 100

    def validate(self):
        checks = [
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.train_steps >= 1, f"train_steps must be >= 1, got {self.train_steps}"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (0 <= self.warmup_steps < self.train_steps,
             f"warmup_steps must be in [0, train_steps), got {self.warmup_steps}"),
            (self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}"),
            (0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (0 <= self.label_dropout < 1,
             f"label_dropout must be in [0, 1), got {self.label_dropout}"),
            (int(self.net.get("num_classes", 0)) >= 0,
             f"net num_classes must be >= 0 (0: unconditional), got {self.net.get('num_classes')}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        schedules.from_config(self.schedule)
        if self.dataset not in data.names():
            raise ValueError(f"unknown dataset {self.dataset!r}; accepted: {', '.join(data.names())}")


def _make_optimizer(cfg):
    lr = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if cfg.warmup_steps else cfg.learning_rate,
        decay_steps=cfg.train_steps - cfg.warmup_steps,
        warmup_target=cfg.learning_rate if cfg.warmup_steps else None,
        warmup_steps=cfg.warmup_steps)
    return keras.optimizers.Adam(lr, global_clipnorm=cfg.grad_clip)


def prediction(sched):
    """What a network trained on `sched` predicts: the velocity ("flow") on a rectified flow,
    else eps."""
    return "flow" if schedules.is_flow(sched) else "eps"


def _sample_times(key, n, sched):
    """Training times [n]: t ~ U{0..T-1} (Ho et al.), or a rectified flow's real t ~ U[0, T-1]."""
    if schedules.is_flow(sched):
        return tf.random.stateless_uniform([n], key, 0.0, sched.num_timesteps - 1.0)
    return tf.cast(tf.random.stateless_uniform([n], key, 0, sched.num_timesteps, tf.int32),
                   tf.float32)


def training_pair(sched, x0, eps, t):
    """(network inputs [x, t], regression target) for data x0, noise eps and times t [B]: the
    noisy x_t = alpha x0 + sigma eps as the network sees it and eps, or for a flow model
    its flow state and time and the velocity eps - x0."""
    x_t = sched.alpha(t)[:, None, None, None] * x0 + sched.sigma(t)[:, None, None, None] * eps
    kind = prediction(sched)
    target = eps - x0 if kind == "flow" else eps
    return list(denoisers.network_inputs(sched, kind, x_t, t)), target


def num_classes(cfg):
    """N of a class-conditional network (labels 0..N-1, null label N); 0: unconditional."""
    return int(cfg.net.get("num_classes", 0))


def _training_data(cfg):
    """(images, labels or None): the labels of a class-conditional run, checked against N."""
    images, labels = data.load_labeled(cfg.dataset, "train")
    n = num_classes(cfg)
    if not n:
        return images, None
    if labels is None:
        raise ValueError(f"a class-conditional network (num_classes {n}) needs labels, and "
                         f"dataset {cfg.dataset!r} has none")
    if labels.min() < 0 or labels.max() >= n:
        raise ValueError(f"dataset {cfg.dataset!r} has labels {int(labels.min())}.."
                         f"{int(labels.max())}, outside 0..{n - 1} (num_classes {n})")
    return images, labels.astype(np.int32)


def batch_labels(key, labels, dropout, null):
    """labels [B], each replaced by the null label with probability `dropout` (stateless key)."""
    keep = tf.random.stateless_uniform(tf.shape(labels), key) >= dropout
    return tf.where(keep, labels, tf.cast(null, labels.dtype))


def _make_train_step(cfg, model, optimizer, ema, images, sched, labels=None):
    n = images.shape[0]
    images = tf.constant(images)
    null = num_classes(cfg)

    @tf.function(jit_compile=cfg.xla)
    def train_step(step):
        key = tf.stack([tf.cast(cfg.seed, tf.int64), tf.cast(step, tf.int64)])
        k_idx, k_t, k_eps = tf.unstack(tf.random.experimental.stateless_split(key, 3))
        idx = tf.random.stateless_uniform([cfg.batch_size], k_idx, 0, n, tf.int32)
        x0 = tf.gather(images, idx)
        t = _sample_times(k_t, cfg.batch_size, sched)
        eps = tf.random.stateless_normal(tf.shape(x0), k_eps)
        inputs, target = training_pair(sched, x0, eps, t)
        if labels is not None:  # its own key: the unconditional sequence stays as it was
            inputs.append(batch_labels(tf.random.experimental.stateless_fold_in(key, 1),
                                       tf.gather(labels, idx), cfg.label_dropout, null))
        with tf.GradientTape() as tape:
            pred = model(inputs, training=True)
            loss = tf.reduce_mean(tf.square(pred - target))
        grads = tape.gradient(loss, model.trainable_variables)
        grad_norm = tf.linalg.global_norm(grads)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        for e, v in zip(ema, model.trainable_variables):
            e.assign(cfg.ema_decay * e + (1.0 - cfg.ema_decay) * v)
        return loss, grad_norm

    return train_step


def _check_resume_config(workdir, cfg):
    path = os.path.join(workdir, "config.json")
    current = dataclasses.asdict(cfg)
    if os.path.exists(path):
        saved = files.read_json(path, "training config", dict)
        keys = ("dataset", "net", "schedule", "batch_size", "seed")
        if num_classes(cfg):
            keys += ("label_dropout",)
        diff = [k for k in keys if json.dumps(saved.get(k), sort_keys=True)
                != json.dumps(current[k], sort_keys=True)]
        if diff:
            raise ValueError(f"{workdir} holds a run with a different {', '.join(diff)}; "
                             "use a new --workdir or the same settings to resume")
    files.write_json(path, current, sort_keys=False)

def train(cfg, workdir, log=print):
    """Train (or resume) a DDPM in workdir; returns the path of the exported model directory.
    log: where the final held-out loss line goes. Raises interrupt.Interrupted when a signal
    stopped it (checkpoint saved)."""
    cfg.validate()
    files.writable_dir(workdir, "the work directory")
    with files.WorkdirLock(workdir):  # a second run on this directory refuses
        _check_resume_config(workdir, cfg)  # under the lock: nothing written by a refused run
        return _train(cfg, workdir, log)


def _train(cfg, workdir, log):
    images, labels = _training_data(cfg)
    sched = schedules.from_config(cfg.schedule)
    keras.utils.set_random_seed(cfg.seed)
    model = unet.build_unet(dict(cfg.net, image_shape=images.shape[1:]))
    optimizer = _make_optimizer(cfg)
    optimizer.build(model.trainable_variables)
    ema = [tf.Variable(v.value if hasattr(v, "value") else v, trainable=False, name="ema")
           for v in model.trainable_variables]
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    ckpt = tf.train.Checkpoint(step=step, model=model, optimizer=optimizer, ema=ema)
    train_step = _make_train_step(cfg, model, optimizer, ema, images, sched, labels)

    def step_fn():
        loss, grad_norm = train_step(step)
        step.assign_add(1)
        return dict(loss=loss, grad_norm=grad_norm)

    # The bar shows after_step's mean loss. The loss and the gradient norm must be finite: an
    # infinite norm makes global-norm clipping write NaN weights while the loss is still finite,
    # and the run stops before such a step is checkpointed.
    loop.run(ckpt, step, cfg.train_steps, step_fn, os.path.join(workdir, "checkpoints"),
             cfg.checkpoint_every, after_step=_summaries(cfg, optimizer),
             summary_dir=os.path.join(workdir, "tensorboard"), desc="train", bar_metrics=(),
             stop_message="stopped by {signal} at step {step}; checkpoint saved, rerun to resume")
    for e, v in zip(ema, model.trainable_variables):
        v.assign(e)
    with interrupt.phase("the held-out loss"):
        held_images, held_labels = data.load_labeled(cfg.dataset, "heldout")
        held = heldout_loss(model, sched, held_images,
                            labels=held_labels if num_classes(cfg) else None)
    log(f"held-out {'velocity MSE' if prediction(sched) == 'flow' else 'L_simple'} of the EMA "
        f"weights: {held:.5f}")
    out_dir = os.path.join(workdir, "model")
    with interrupt.phase(f"the export of the model to {out_dir}"):
        return export_model(model, cfg, out_dir, extra=dict(heldout_loss=held,
                                                            heldout_loss_seed=0,
                                                            heldout_loss_repeats=8))


def _summaries(cfg, optimizer):
    """after_step for loop.run: every log_every steps (and at the last step) the mean loss of
    the last log_every steps this process ran, the step's gradient norm and the learning rate
    as summaries; the mean loss also goes on the progress bar."""
    losses = collections.deque(maxlen=cfg.log_every)

    def after_step(s, metrics):
        losses.append(metrics["loss"])
        if s % cfg.log_every == 0 or s == cfg.train_steps:
            mean_loss = float(np.mean(losses))
            summaries.scalar("loss", mean_loss, step=s)
            summaries.scalar("grad_norm", metrics["grad_norm"], step=s)
            summaries.scalar("learning_rate", optimizer.learning_rate, step=s)
            return dict(loss=mean_loss)
        return None

    return after_step


def heldout_loss(model, sched, images, seed=0, repeats=8, batch_size=512, labels=None):
    """L_simple (a flow model's velocity MSE) on images with fixed t and eps (stateless RNG from
    seed, t drawn as in training), averaged over repeats; given their labels, a
    class-conditional model's conditional loss.

    Deterministic for a given model, so it is recorded at export and re-checked by the tests.
    """
    images = tf.constant(images, tf.float32)
    n = int(images.shape[0])
    total = 0.0
    for r in range(repeats):
        k_t, k_eps = tf.unstack(tf.random.experimental.stateless_split([seed, r], 2))
        t = _sample_times(k_t, n, sched)
        eps = tf.random.stateless_normal(tf.shape(images), k_eps)
        (x_in, t_in), target = training_pair(sched, images, eps, t)
        for i in range(0, n, batch_size):
            inputs = [x_in[i:i + batch_size], t_in[i:i + batch_size]]
            if labels is not None:
                inputs.append(tf.constant(labels[i:i + batch_size], tf.int32))
            pred = model(inputs, training=False)
            total += float(tf.reduce_sum(tf.square(pred - target[i:i + batch_size])))
    return total / (repeats * int(tf.size(images)))


def export_model(model, cfg, out_dir, extra=None):
    """Write out_dir/config.json + out_dir/model.weights.h5 (what `pretrained` loads)."""
    with files.atomic_path(os.path.join(out_dir, "model.weights.h5")) as tmp:
        model.save_weights(tmp)  # then config.json, which marks the model complete
    meta = dict(kind="ddpm", prediction=prediction(schedules.from_config(cfg.schedule)),
                net=dict(cfg.net, image_shape=list(model.input_shape[0][1:])),
                schedule=cfg.schedule, dataset=cfg.dataset, train_config=dataclasses.asdict(cfg),
                data_range=[-1.0, 1.0], exported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta.update(extra or {})
    files.write_json(os.path.join(out_dir, "config.json"), meta, sort_keys=False)
    return out_dir
