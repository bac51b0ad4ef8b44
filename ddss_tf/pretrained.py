"""The bundled models: digits DDPMs, a digits flow model and two digits classifiers, shipped in
ddss_tf/assets/.

    model, sched = pretrained.digits_ddpm()       # Keras eps-model [x_t, t] -> eps, and its schedule
    model, sched = pretrained.digits_flow()       # rectified flow [x, 1000 s] -> eps - x0, schedule
    classifier = pretrained.digits_classifier()   # images [B, 8, 8, 1] in [-1, 1] -> logits [B, 10]
    features = pretrained.digits_features()       # images -> penultimate features [B, 128]

A second classifier, trained independently with another architecture and seed,
gives a held-out feature space (`digits_heldout_classifier`,
`digits_heldout_features`) so that a sampler tuned against the first network
can be checked with features it never saw.

Each asset directory holds config.json (architecture, schedule, training
settings and recorded metrics) and model.weights.h5. `load_ddpm` /
`load_classifier` read any directory of that shape (what `ddss_train_model`
and `ddss_train_classifier` write).
"""

import json
import os

from ddss_tf import metrics, schedules
from ddss_tf.nets import classifier as classifier_net
from ddss_tf.nets import unet

__all__ = [
    "asset_dir", "load_config", "load_ddpm", "load_classifier",
    "BUNDLED_DDPMS", "digits_ddpm", "digits_cond_ddpm", "digits_flow", "digits_classifier",
    "digits_features",
    "digits_heldout_classifier", "digits_heldout_features",
]

# --model names of the bundled diffusion models -> their asset directories.
BUNDLED_DDPMS = {"digits": "digits_ddpm", "digits_cond": "digits_cond_ddpm",
                 "digits_flow": "digits_flow"}

_ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")


def asset_dir(name):
    """Path of a bundled asset directory (digits_ddpm, digits_classifier, ...)."""
    return os.path.join(_ASSETS, name)


def load_config(path):
    """The config.json of a model directory, with a clear error when it is missing or unreadable."""
    cfg_path = os.path.join(path, "config.json")
    weights = os.path.join(path, "model.weights.h5")
    for f in (cfg_path, weights):
        if not os.path.isfile(f):
            raise FileNotFoundError(
                f"model file {f} is missing; expected config.json and model.weights.h5 in {path} "
                "(reinstall ddss_tf for the bundled models, or train one with ddss_train_model)")
    try:
        with open(cfg_path) as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"model config {cfg_path} is corrupt ({e}); reinstall or retrain") from e


def _load_weights(model, path):
    weights = os.path.join(path, "model.weights.h5")
    try:
        model.load_weights(weights)
    except Exception as e:  # h5py / Keras raise many types for truncated or foreign files
        raise ValueError(f"weights file {weights} is corrupt or does not match its config.json "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    return model


def load_ddpm(path):
    """(Keras model, Schedule) from a directory written by ddss_train_model: [x_t, t] -> eps, or
    on a rectified-flow schedule [x, time_scale * s] -> eps - x0 (its config.json's
    "prediction": "flow")."""
    cfg = load_config(path)
    if cfg.get("kind") != "ddpm":
        raise ValueError(f"{path} does not hold a diffusion model (kind={cfg.get('kind')!r})")
    model = unet.build_unet(cfg["net"], name=os.path.basename(os.path.normpath(path)))
    model.trainable = False
    return _load_weights(model, path), schedules.from_config(cfg["schedule"])


def load_classifier(path):
    """Keras classifier images -> logits from a directory written by ddss_train_classifier."""
    cfg = load_config(path)
    if cfg.get("kind") != "classifier":
        raise ValueError(f"{path} does not hold a classifier (kind={cfg.get('kind')!r})")
    model = classifier_net.build_classifier(cfg["net"],
                                            name=os.path.basename(os.path.normpath(path)))
    model.trainable = False
    return _load_weights(model, path)


def digits_ddpm():
    """The bundled digits eps-model and its schedule (linear betas, T = 1000)."""
    return load_ddpm(asset_dir("digits_ddpm"))


def digits_cond_ddpm():
    """The bundled class-conditional digits eps-model [x_t, t, c] -> eps (labels 0..9, label 10
    the null label of classifier-free guidance) and its schedule (linear betas, T = 1000)."""
    return load_ddpm(asset_dir("digits_cond_ddpm"))


def digits_flow():
    """The bundled rectified-flow digits model [x, 1000 s] -> eps - x0 (flow matching, shift 1,
    the digits DDPM's UNet) and its schedule, rectified_flow(T = 1000, time_scale 1000)."""
    return load_ddpm(asset_dir("digits_flow"))


def digits_classifier():
    """The bundled digits classifier (the default feature network)."""
    return load_classifier(asset_dir("digits_classifier"))


def digits_features():
    """images [B, 8, 8, 1] in [-1, 1] -> penultimate features [B, 128] of `digits_classifier`.

    A metrics.FeatureExtractor: callable, differentiable, with `features_and_logits`.
    """
    return metrics.from_keras_classifier(digits_classifier(), name="digits")


def digits_heldout_classifier():
    """The second, independently trained digits classifier (held-out metric)."""
    return load_classifier(asset_dir("digits_classifier_heldout"))


def digits_heldout_features():
    """images -> penultimate features [B, 64] of `digits_heldout_classifier` (a FeatureExtractor)."""
    return metrics.from_keras_classifier(digits_heldout_classifier(), name="digits_heldout")
