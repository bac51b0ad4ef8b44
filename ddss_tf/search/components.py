"""Resolve the names a search config uses into objects: model, feature networks, samplers."""

import os

import tensorflow as tf

from ddss_tf import metrics, models, pretrained, samplers

__all__ = ["LEARNABLE", "load_denoiser", "load_extractor", "build_sampler", "baseline_specs"]

LEARNABLE = ("ddim_sigma", "vars", "rddim", "ggdm")


def load_denoiser(model="digits", clip_x0=False, *, schedule="", num_timesteps=1000,
                  prediction="eps", **checkpoint_options):
    """(Denoiser, keras model) for any model `ddss_tf.models` loads: "digits" (the bundled
    DDPM), a ddss_train_model directory, a Keras file, a SavedModel or a TF1 checkpoint (with
    its schedule and parametrisation; checkpoint_options: model_preset, image_size, ema).
    `load_denoiser(**models.options(cfg))` loads a SearchConfig's model."""
    return models.load_denoiser(model, schedule, num_timesteps, prediction, clip_x0=clip_x0,
                                **checkpoint_options)


def _pixels():
    def fn(images):
        return tf.reshape(images, [tf.shape(images)[0], -1])

    return metrics.from_function(fn, "pixels")


def load_extractor(name):
    """A metrics.FeatureExtractor: "digits", "digits_heldout", "pixels", or a path to an
    Inception file (see metrics.load_inception)."""
    if name == "digits":
        return pretrained.digits_features()
    if name == "digits_heldout":
        return pretrained.digits_heldout_features()
    if name == "pixels":
        return _pixels()
    if os.path.exists(name):
        return metrics.load_inception(name)
    raise ValueError(f"unknown feature network {name!r}; accepted: digits, digits_heldout, "
                     "pixels, or a path to an Inception file")


def build_sampler(cfg, denoiser):
    """The learnable sampler layer a SearchConfig describes (not yet built)."""
    options = dict(num_steps=cfg.num_steps, stride=cfg.stride, remat=cfg.remat,
                   loop=cfg.loop)
    if cfg.family in LEARNABLE:
        options.update(time=cfg.time, init=cfg.init)
        if cfg.family == "ggdm":
            options["pred"] = cfg.pred
    else:
        raise ValueError(f"family {cfg.family!r} has nothing to learn; learnable families: "
                         f"{', '.join(LEARNABLE)}")
    return samplers.create(cfg.family, denoiser, **options)


def baseline_specs():
    """The training-free samplers a learned one is compared with at the same K:
    (label, family, options), as in the paper's tables."""
    return [
        ("DDPM linear", "ddpm", dict(stride="linear")),
        ("DDPM quadratic", "ddpm", dict(stride="quadratic")),
        ("DDIM linear", "ddim", dict(stride="linear", eta=0.0)),
        ("DDIM quadratic", "ddim", dict(stride="quadratic", eta=0.0)),
    ]


def build_layer(family, denoiser, num_steps, remat=False, **options):
    """A training-free (or any) sampler layer for evaluation (no rematerialisation)."""
    return samplers.create(family, denoiser, num_steps=num_steps, remat=remat, **options)
