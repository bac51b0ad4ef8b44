"""Bring your own diffusion model: what `--model` may name, loaded as (Keras network, schedule).

    net, sched = models.load("eps_model.keras", schedule="linear_beta", num_timesteps=1000)
    den, net = models.load_denoiser("saved_model_dir", schedule="cosine.json", prediction="v")
    net, sched = models.load("diffusion_cifar10_model/model.ckpt-790000", model_preset="cifar10")
    net, sched = models.load("ckpt_dir", schedule="linear_beta", num_timesteps=1000, image_size=32)

`model` is one of

  "digits"                    the bundled DDPM (8x8x1; carries its schedule; predicts eps)
  "digits_cond"               the bundled class-conditional DDPM (as "digits", conditioned on
                              the digit 0..9; label 10 is the null label of guidance)
  "digits_flow"               the bundled rectified-flow model (carries its schedule; predicts
                              the velocity, "flow")
  a ddss_train_model dir      config.json + model.weights.h5 (carries its schedule; eps)
  a Keras file .keras / .h5   model([x_t, t]) -> prediction, a functional model
  a SavedModel directory      serving_default (x_t, t) -> prediction (nets.saved_model_net)
  (either may take a condition c as a third input: int labels [B] or a float embedding
  [B, D]; `load_denoiser` then gives a `denoisers.ConditionalDenoiser`, and `describe` says so)
  a TF1 checkpoint            Ho et al.'s original diffusion_tf UNet: a prefix
                              (.../model.ckpt-790000) or a directory with a `checkpoint`
                              file (nets.diffusion_tf); EMA weights unless ema=False

The contract of a network brought from outside: x_t float32 [B, H, W, C] (H, W, C
fixed, data range [-1, 1] before noising), t float32 [B] real-valued model time in
[0, T - 1], output [B, H, W, C] that is eps, x0 or v (`prediction`; converted once by
`ddss_tf.denoisers`), or [B, H, W, 2C] for eps with a learned variance (iDDPM / ADM
"learn_sigma": eps first; the denoiser uses those C channels). A rectified-flow model
(prediction "flow", with a rectified_flow schedule) is called instead on the flow state
(1 - s) x0 + s eps at time time_scale * s (the schedule's; `schedules.RectifiedFlow`) and
returns the velocity eps - x0. A TF1 checkpoint records
no image size: `image_size` (S, for S x S images), or a `model_preset` naming a
released model, which also carries its schedule. Such a file carries no schedule, so
`schedule` is required:
a name of `schedules.names()` built with `num_timesteps` steps (the constructor's other
arguments at their defaults), or a JSON file holding `Schedule.get_config()`, e.g.
{"kind": "linear_beta", "num_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02}.

`ModelSpec` is the one spelling of these options: its fields are the keyword arguments
of `load`, the SearchConfig fields of the same names (SearchConfig derives from it) and
the binaries' model flags (`cli.define_model_flags`), so `load(**options(cfg))` loads the
model of a search config.
"""

import dataclasses
import os
import zipfile

import keras
import numpy as np

from ddss_tf import denoisers, files, pretrained, schedules, settings
from ddss_tf.nets import diffusion_tf, saved_model_net
from ddss_tf.nets import unet  # noqa: F401  (registers the UNet layers a .keras file may use)

__all__ = ["ModelSpec", "OPTIONS", "DEFAULTS", "ACCEPTED", "options", "flags", "kind",
           "own_prediction",
           "carries_schedule", "load_schedule", "load", "load_denoiser", "image_shape",
           "fingerprint", "describe"]


@dataclasses.dataclass
class ModelSpec:
    """What `--model` names and how its network is read (the module doc; README's model
    contract)."""
    model: str = settings.setting(
        "digits", "'digits' (the bundled DDPM), 'digits_cond' (the bundled class-conditional "
        "one), 'digits_flow' (the bundled rectified flow), a ddss_train_model directory, a Keras file (.keras / .h5), a SavedModel "
        "directory: model([x_t [B,H,W,C], t [B]]) -> eps | x | v (README: the model contract), "
        "or a TF1 checkpoint of Ho et al.'s diffusion_tf UNet (prefix .../model.ckpt-N or its "
        "directory; with --image_size or --model_preset).")
    schedule: str = settings.setting(
        "", "Noise schedule of a Keras / SavedModel model: a name of ddss_tf.schedules.names() "
        "(with --num_timesteps) or a .json file holding Schedule.get_config(). Empty: the "
        "model's own (digits and ddss_train_model directories carry theirs).")
    num_timesteps: int = settings.setting(
        1000, "T of a --schedule given by name.", lower=2, upper=schedules.MAX_TIMESTEPS)
    prediction: str = settings.setting(
        "", "What the model returns: eps, x (= x0), v, or flow (a rectified-flow model's "
        "velocity eps - x0, with a rectified_flow schedule). Empty: the model's own (digits "
        "models and ddss_train_model directories carry theirs), eps for a file.",
        choices=denoisers.predictions)
    model_preset: str = settings.setting(
        "", "A released diffusion_tf model (Ho et al.) for a TF1 checkpoint --model: fixes its "
        "image size and schedule (cifar10: 32x32, linear betas 1e-4..0.02, T = 1000; the others "
        "256x256).", choices=diffusion_tf.preset_names)
    image_size: int = settings.setting(
        0, "S for S x S images: the input size of a TF1 checkpoint --model (it records none); "
        "0: from --model_preset.", lower=0)
    ema: bool = settings.setting(
        True, "A TF1 checkpoint --model: its EMA weights (the ones Ho et al. evaluate); "
        "--noema: the raw weights.")


OPTIONS = tuple(f.name for f in dataclasses.fields(ModelSpec))
DEFAULTS = settings.defaults(ModelSpec)
ACCEPTED = ("digits, digits_cond or digits_flow (the bundled models), a ddss_train_model "
            "directory, a Keras model file (.keras / .h5), a SavedModel directory "
            "(serving_default (x_t, t) -> eps | x | v | flow) or a TF1 checkpoint of Ho et al.'s "
            "diffusion_tf UNet (prefix or directory)")
_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_KINDS = dict(digits="a bundled digits DDPM", model_dir="a ddss_train_model directory",
              keras="a Keras model file", saved_model="a SavedModel",
              tf1_checkpoint="a TF1 checkpoint")


def own_prediction(model):
    """What `model` predicts when no prediction is given: a bundled model's or a
    ddss_train_model directory's own (its config.json's), eps for any other (a file carries
    none, nor does a model that does not load: `load` says why)."""
    try:
        which = kind(model)
        if which == "digits":
            return pretrained.load_config(pretrained.asset_dir(
                pretrained.BUNDLED_DDPMS[model])).get("prediction", "eps")
        if which == "model_dir":
            return pretrained.load_config(model).get("prediction", "eps")
    except (OSError, ValueError):
        pass
    return "eps"


def options(cfg):
    """{name: value} of the OPTIONS an object (e.g. a SearchConfig) has, defaults for the rest."""
    return {k: getattr(cfg, k, DEFAULTS[k]) for k in OPTIONS}


def flags(cfg):
    """The binaries' flags (`--name=value`) that load the model `cfg` names: its OPTIONS
    other than the defaults, so a command printed for a search names the same model."""
    given = options(cfg)
    if given["prediction"] == own_prediction(given["model"]):
        given["prediction"] = DEFAULTS["prediction"]
    return [f"--{k}={v}" for k, v in given.items() if v != DEFAULTS[k]]


def kind(model):
    """"digits" (a bundled model: digits, digits_cond, digits_flow), "model_dir", "keras",
    "saved_model" or "tf1_checkpoint"; ValueError naming what is accepted."""
    if model in pretrained.BUNDLED_DDPMS:
        return "digits"
    model = str(model)
    if os.path.isdir(model):
        if os.path.isfile(os.path.join(model, "saved_model.pb")):
            return "saved_model"
        if os.path.isfile(os.path.join(model, "model.weights.h5")):
            return "model_dir"
        if diffusion_tf.is_checkpoint(model):
            return "tf1_checkpoint"
        if os.path.isfile(os.path.join(model, "config.json")):
            return "model_dir"
        raise ValueError(f"unknown model {model!r}: the directory holds neither config.json "
                         f"(ddss_train_model), saved_model.pb nor a `checkpoint` file; accepted: "
                         f"{ACCEPTED}")
    if diffusion_tf.is_checkpoint(model):
        return "tf1_checkpoint"
    if os.path.isfile(model):
        if model.endswith(_KERAS_SUFFIXES):
            return "keras"
        raise ValueError(f"unknown model {model!r}: not a Keras file (.keras / .h5); "
                         f"accepted: {ACCEPTED}")
    raise ValueError(f"unknown model {model!r}: no such file or directory; accepted: {ACCEPTED}")


def carries_schedule(model, model_preset=""):
    """True when `model` brings its own schedule (the bundled model, ddss_train_model dirs) or a
    model preset gives it."""
    return bool(model_preset) or kind(model) in ("digits", "model_dir")


def load_schedule(schedule, num_timesteps=1000):
    """A Schedule from a name of schedules.names(), a JSON file path, or a get_config() dict."""
    accepted = (f"accepted: {', '.join(schedules.names())} (with num_timesteps) or a .json "
                "file holding Schedule.get_config(), e.g. "
                "{\"kind\": \"cosine\", \"num_timesteps\": 1000}")
    if isinstance(schedule, dict):
        config, where = schedule, "schedule config"
    elif schedule in schedules.names():
        config, where = dict(kind=schedule, num_timesteps=num_timesteps), "schedule"
    elif os.path.isfile(str(schedule)):
        where = f"schedule file {schedule}"
        try:
            config = files.read_json(schedule, "schedule file")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{where} is not readable JSON ({e}); {accepted}") from e
    else:
        raise ValueError(f"unknown schedule {schedule!r} (not a name, no such file); {accepted}")
    if not isinstance(config, dict):
        raise ValueError(f"{where} must be a JSON object; {accepted}")
    try:
        return schedules.from_config(config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where} {config} is invalid ({e}); {accepted}") from e


def image_shape(network):
    """(H, W, C) of a network called as network([x_t, t]), or None when it cannot tell (a
    network without fixed inputs)."""
    try:
        shape = list(network.inputs[0].shape[1:])
    except (TypeError, IndexError, AttributeError):
        return None
    return tuple(int(s) for s in shape) if len(shape) == 3 and None not in shape else None


def fingerprint(network):
    """"<name>:<sha1 digest of the weights' shapes, dtypes and bytes>" of a Keras network: what
    coefficients.json and the evaluation caches record of the model. Loaders compare only the
    digest, so a renamed copy of the same network still matches."""
    return f"{network.name}:{files.weights_digest(network.get_weights())}"


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_keras_file(path):
    """ValueError saying what `path` is when it is not the container its suffix promises: a
    .keras file is a zip archive (model.save("x.keras")), an .h5 / .hdf5 file is HDF5."""
    with open(path, "rb") as f:
        head = f.read(8)
    if path.endswith(".keras"):
        if zipfile.is_zipfile(path):
            return
        want = "a .keras file is a zip archive, as keras.Model.save('model.keras') writes"
    elif head == _HDF5_SIGNATURE:
        return
    else:
        want = "an .h5 / .hdf5 file is an HDF5 file, as keras.Model.save('model.h5') writes"
    what = "an empty file" if not head else f"a file starting with {head!r}"
    raise ValueError(f"{path} is not a Keras model file ({what}): {want}; accepted: {ACCEPTED}")


def _load_keras(path):
    _check_keras_file(path)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras / h5py raise many types for foreign or damaged files
        raise ValueError(f"cannot load the Keras model {path} ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]})") from e


def describe(denoiser):
    """One line on what a loaded model is conditioned on."""
    if not isinstance(denoiser, denoisers.ConditionalDenoiser):
        return "unconditional: model([x_t, t])"
    null = denoiser.null_condition
    if null.shape.rank == 0:
        return (f"conditional on labels 0..{int(null) - 1}: model([x_t, t, c]), null label "
                f"{int(null)} (classifier-free guidance's unconditional call)")
    return (f"conditional on embeddings [B, {null.shape[0]}]: model([x_t, t, c]), null embedding "
            "zeros")


def _check_network(net, source, prediction="eps"):
    """ValueError unless net takes [x_t [B, H, W, C], t [B]] (and optionally a condition c:
    int labels [B] or a float embedding [B, D]) and returns [B, H, W, C] (or, for eps,
    [B, H, W, 2C]: eps and a learned variance)."""
    contract = ("model([x_t [B, H, W, C], t [B]]) -> [B, H, W, C], or model([x_t, t, c]) with "
                "c int labels [B] or a float embedding [B, D]")
    inputs, outputs = getattr(net, "inputs", None), getattr(net, "outputs", None)
    if not inputs or not outputs:
        raise ValueError(f"{source} has no fixed inputs / outputs (a subclassed model?); save a "
                         f"functional keras.Model, contract {contract}")
    shapes = [tuple(i.shape) for i in inputs]
    bad_c = len(shapes) == 3 and not (
        (shapes[2] == (None,) and "int" in str(inputs[2].dtype))
        or (len(shapes[2]) == 2 and shapes[2][1] is not None and "float" in str(inputs[2].dtype)))
    if (len(shapes) not in (2, 3) or len(shapes[0]) != 4 or None in shapes[0][1:]
            or shapes[1] != (None,) or bad_c):
        raise ValueError(f"{source} takes inputs {shapes}; the contract is {contract} with H, W, "
                         "C fixed and t of keras.Input(shape=())")
    out = [tuple(o.shape) for o in outputs]
    h, w, c = shapes[0][1:]
    learned_variance = [(None, h, w, 2 * c)]
    if out != [shapes[0]] and not (out == learned_variance and prediction == "eps"):
        detail = (f"; a {2 * c}-channel output (eps and a learned variance) is accepted with "
                  f"prediction eps, not {prediction}" if out == learned_variance else "")
        raise ValueError(f"{source} returns {out}, x_t is {shapes[0]}: the output must have the "
                         f"input's shape (or 2C channels, eps first, for prediction eps), "
                         f"contract {contract}{detail}")
    probe_inputs = [np.zeros([2, h, w, c], np.float32), np.array([0.0, 1.0], np.float32)]
    if len(shapes) == 3:
        probe_inputs.append(np.zeros((2,) + shapes[2][1:], inputs[2].dtype))
    try:  # a real call: catches what the static shapes do not (a hard-coded batch, bad dtypes)
        probe = net(probe_inputs, training=False)
    except Exception as e:
        raise ValueError(f"calling {source} on x_t [2, {h}, {w}, {c}], t [2] failed "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    if tuple(probe.shape) != (2,) + out[0][1:]:
        raise ValueError(f"{source} returned shape {list(probe.shape)} for x_t [2, {h}, {w}, {c}]")


def _preset(model, model_preset, schedule, image_size, prediction):
    """(image size, schedule config) of a released model's preset, checked against the checkpoint."""
    if model_preset not in diffusion_tf.PRESETS:
        raise ValueError(f"unknown model preset {model_preset!r}; accepted: "
                         f"{', '.join(diffusion_tf.preset_names())}")
    size, sched_config, own_prediction, arch = diffusion_tf.PRESETS[model_preset]
    clash = []
    if schedule:
        clash.append(f"schedule {schedule!r}")
    if image_size and image_size != size:
        clash.append(f"image_size {image_size}")
    if prediction != own_prediction:
        clash.append(f"prediction {prediction!r}")
    if clash:
        raise ValueError(f"model preset {model_preset} fixes image_size {size}, its schedule and "
                         f"prediction {own_prediction}; drop {', '.join(clash)} (or the preset)")
    found = diffusion_tf.infer_architecture(model)
    if dataclasses.replace(found, scope=arch.scope) != arch:
        raise ValueError(f"{model} is not the {model_preset} model: its UNet has "
                         f"{found.describe()}, the preset's has {arch.describe()}; drop the "
                         "preset and give image_size and schedule")
    return size, sched_config


def _spec(model, options):
    """A ModelSpec from `load`'s arguments."""
    if isinstance(model, ModelSpec):
        if options:
            raise TypeError(f"give a ModelSpec or keyword options, not both (got {sorted(options)})")
        return model
    return ModelSpec(model=model, **options)


def load(model="digits", **options):
    """(Keras network [x_t, t] -> prediction, Schedule) for any `model` the module doc lists.

    model: a `ModelSpec`, or its `model` field with the others as keyword `options`:
    schedule ("" for the model's own: required for a Keras file, SavedModel or TF1
    checkpoint without a preset; else as `load_schedule` accepts), num_timesteps,
    prediction (what the network returns: eps | x | v), and for a TF1 checkpoint only
    model_preset, image_size, ema (a released model's preset; S for S x S images; EMA or
    raw weights).
    """
    spec = _spec(model, options)
    model, schedule, prediction = spec.model, spec.schedule, _prediction(spec)
    model_preset, image_size, ema = spec.model_preset, spec.image_size, spec.ema
    if prediction not in denoisers.predictions():
        raise ValueError(f"unknown prediction {prediction!r}; accepted: "
                         f"{', '.join(denoisers.predictions())}")
    which = kind(model)
    given = [f"{name}={value!r}" for name, value in
             (("model_preset", model_preset), ("image_size", image_size), ("ema", ema))
             if value != DEFAULTS[name]]
    if given and which != "tf1_checkpoint":
        raise ValueError(f"{', '.join(given)}: for TF1 checkpoints (diffusion_tf) only, and "
                         f"{model!r} is {_KINDS[which]}")
    if which in ("digits", "model_dir"):
        own = own_prediction(model)
        if schedule:
            raise ValueError(f"model {model!r} carries its own schedule; a schedule "
                             f"({schedule!r}) applies to Keras files, SavedModels and TF1 "
                             "checkpoints only")
        if prediction != own:
            raise ValueError(f"model {model!r} predicts {own}, not {prediction}")
        return pretrained.load_ddpm(pretrained.asset_dir(pretrained.BUNDLED_DDPMS[model])
                                    if which == "digits" else model)
    if which == "tf1_checkpoint":
        if model_preset:
            image_size, schedule = _preset(model, model_preset, schedule, image_size, prediction)
        elif not image_size:
            raise ValueError(f"the TF1 checkpoint {model} does not record its image size: give "
                             "image_size (--image_size=S for S x S images) or a model preset "
                             f"(--model_preset={'|'.join(diffusion_tf.preset_names())})")
    if not schedule:
        raise ValueError(f"model {model!r} carries no noise schedule: give one (accepted: "
                         f"{', '.join(schedules.names())} with num_timesteps, or a schedule "
                         ".json file)")
    sched = load_schedule(schedule, spec.num_timesteps)
    if which == "keras":
        net, source = _load_keras(model), f"the Keras model {model}"
    elif which == "saved_model":
        net, source = saved_model_net.load(model), f"the SavedModel {model}"
    else:
        net, source = diffusion_tf.load(model, image_size, ema=ema), f"the TF1 checkpoint {model}"
    _check_network(net, source, prediction)
    _check_flow(sched, prediction)
    net.trainable = False
    return net, sched


def _prediction(spec):
    """The spec's prediction, or the model's own when it gives none."""
    return spec.prediction or own_prediction(spec.model)


def _check_flow(sched, prediction):
    """A flow model (prediction flow) comes with a rectified_flow schedule, and such a schedule
    with a flow model (`denoisers`: the network is called on the flow state)."""
    if (prediction == "flow") != schedules.is_flow(sched):
        kind = sched.get_config().get("kind")
        raise ValueError(
            f"prediction {prediction} with a {kind} schedule: a flow model (--prediction=flow) "
            "runs on a rectified_flow schedule (--schedule=rectified_flow or a .json file "
            "{\"kind\": \"rectified_flow\", \"shift\": 3.0, \"time_scale\": 1000}), and a "
            "rectified_flow schedule serves flow models only")


def load_denoiser(model="digits", clip_x0=False, **options):
    """(denoisers.Denoiser, Keras network) for `load`'s arguments."""
    spec = _spec(model, options)
    net, sched = load(spec)
    return denoisers.from_keras_model(net, sched, prediction=_prediction(spec),
                                      clip_x0=clip_x0), net
