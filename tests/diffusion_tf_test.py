"""Ho et al.'s TF1 checkpoints as a model: the fixture written by the original code reproduces the
original network's outputs (EMA and raw weights, 1e-5), every converted weight is the checkpoint
tensor of its name, other configurations match a float64 NumPy pass of the original network
(tests/diffusion_tf_reference.py, itself checked against the fixture), and a checkpoint that does
not fit fails with one line naming the variable."""

import json
import os
import re
import shutil

import numpy as np
import pytest

from ddss_tf import models, schedules
from ddss_tf.nets import diffusion_tf, unet

import diffusion_tf_reference as ref
import testing

FIXTURE = os.path.join(testing.ROOT, "tests", "fixtures", "diffusion_tf_small")
PREFIX = os.path.join(FIXTURE, "model.ckpt-1000")
EMA = "/ExponentialMovingAverage"
_LINEAR = dict(schedule="linear_beta", num_timesteps=1000)


@pytest.fixture(scope="module")
def io():
    return dict(np.load(os.path.join(FIXTURE, "io.npz")))


@pytest.fixture(scope="module")
def values():
    return ref.read_checkpoint(PREFIX)


def _config():
    with open(os.path.join(FIXTURE, "config.json")) as f:
        return json.load(f)


def _call(net, x, t):
    return net([np.asarray(x, np.float32), np.asarray(t, np.float32)]).numpy()


@pytest.mark.parametrize("ema,key,other", [(True, "out_ema", "out_raw"), (False, "out_raw", "out_ema")])
def test_the_fixture_reproduces_the_original_network(io, ema, key, other):
    net, sched = models.load(PREFIX, image_size=16, ema=ema, **_LINEAR)
    out = _call(net, io["x"], io["t"])
    np.testing.assert_allclose(out, io[key], rtol=0, atol=1e-5)
    assert np.abs(out - io[other]).max() > 1.0  # the other weights give another network
    np.testing.assert_array_equal(sched.betas, np.linspace(1e-4, 0.02, 1000))
    assert models.image_shape(net) == (16, 16, 3) and not net.trainable_variables


def _keras_weight(net, name):
    """The Keras array a checkpoint variable is, by a name translation written for this test."""
    path = name[len("model/"):].removesuffix(EMA)
    *scope, layer, leaf = path.split("/")
    scope = "/".join(scope)
    block = re.fullmatch(r"(down|up)_(\d+)/(block|attn)_(\d+)", scope)
    if block:
        side, level, kind, j = block.groups()
        keras_layer = net.get_layer(f"{side}{level}_{'res' if kind == 'block' else 'attn'}{j}")
    elif scope in ("mid/block_1", "mid/block_2", "mid/attn_1"):
        keras_layer = net.get_layer({"mid/block_1": "mid_res0", "mid/block_2": "mid_res1",
                                     "mid/attn_1": "mid_attn"}[scope])
    elif re.fullmatch(r"(down|up)_\d+/(downsample|upsample)", scope):
        side, level, _ = re.split(r"_|/", scope)
        keras_layer = net.get_layer(f"{side}{level}_{'ds' if side == 'down' else 'us_conv'}")
        layer = None
    else:
        keras_layer = net.get_layer(f"{scope}_{layer}" if scope == "temb" else layer)
        layer = None
    column = None
    if layer in ("q", "k", "v"):
        column, layer = "qkv".index(layer), "qkv"
    sub = {None: keras_layer, "nin_shortcut": getattr(keras_layer, "skip", None),
           "proj_out": getattr(keras_layer, "proj", None)}.get(layer) or getattr(keras_layer, layer)
    weights = {"W": sub.kernel, "b": sub.bias} if leaf in ("W", "b") else \
        {"gamma": sub.gamma, "beta": sub.beta}
    value = weights[leaf].numpy()
    if column is not None:
        width = value.shape[-1] // 3
        value = value[..., column * width:(column + 1) * width]
    return value


@pytest.mark.parametrize("ema", [True, False])
def test_every_converted_weight_is_the_checkpoint_tensor_of_its_name(values, ema):
    # The output cannot see the 15 inert variables the fixture's README lists; names can.
    net, _ = models.load(PREFIX, image_size=16, ema=ema, **_LINEAR)
    names = [n for n in values if n.startswith("model/") and n.endswith(EMA) == ema]
    assert len(names) == 144
    for name in names:
        want = values[name]
        got = _keras_weight(net, name)
        assert got.size == want.size, name
        np.testing.assert_array_equal(got.reshape(want.shape), want, err_msg=name)
    assert sum(int(np.prod(w.shape)) for w in net.weights) == 702499


def test_the_architecture_is_inferred_from_names_and_shapes():
    cfg = _config()
    arch = diffusion_tf.infer_architecture(PREFIX)
    assert (arch.ch, arch.ch_mult, arch.num_res_blocks, arch.out_ch, arch.resamp_with_conv) == \
        (cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"], cfg["out_ch"],
         cfg["resamp_with_conv"])
    assert arch.attn_levels == (1,) and arch.in_ch == 3 and not arch.conv_shortcut  # 8 = 16 / 2


def test_a_prefix_its_files_and_its_directory_name_the_same_checkpoint(io):
    want = _call(models.load(PREFIX, image_size=16, **_LINEAR)[0], io["x"], io["t"])
    for path in (FIXTURE, PREFIX + ".index", PREFIX + ".data-00000-of-00001"):
        assert models.kind(path) == "tf1_checkpoint"
        np.testing.assert_array_equal(_call(models.load(path, image_size=16, **_LINEAR)[0],
                                            io["x"], io["t"]), want)


def test_a_directory_written_elsewhere_or_without_a_checkpoint_file(tmp_path, io):
    # Released checkpoints were written by TPUEstimator on a bucket: their `checkpoint` file
    # names gs:// paths. A directory may also hold the files without a `checkpoint` file.
    want = _call(models.load(PREFIX, image_size=16, **_LINEAR)[0], io["x"], io["t"])
    elsewhere, bare = tmp_path / "elsewhere", tmp_path / "bare"
    shutil.copytree(FIXTURE, elsewhere)
    (elsewhere / "checkpoint").write_text(
        'model_checkpoint_path: "gs://bucket/diffusion_cifar10_model/model.ckpt-1000"\n')
    shutil.copytree(FIXTURE, bare)
    os.remove(bare / "checkpoint")
    for directory in (elsewhere, bare):
        assert models.kind(str(directory)) == "tf1_checkpoint"
        net, _ = models.load(str(directory), image_size=16, **_LINEAR)
        np.testing.assert_array_equal(_call(net, io["x"], io["t"]), want)


def test_t_is_real_valued(values, io):
    net, _ = models.load(PREFIX, image_size=16, **_LINEAR)
    t = np.array([17.5, 250.25, 0.5, 998.75])
    ema = {k.removesuffix(EMA): v for k, v in values.items() if k.endswith(EMA)}
    want = ref.unet_forward(ref.Params(ema), io["x"], t, **_reference_kwargs(_config()))
    out = _call(net, io["x"], t)
    np.testing.assert_allclose(out, want, rtol=0, atol=1e-5)
    assert np.abs(out - _call(net, io["x"], np.floor(t))).max() > 1e-3


def _reference_kwargs(cfg):
    keys = ("ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "resamp_with_conv",
            "conv_shortcut")
    return {k: cfg[k] for k in keys if k in cfg}


# Other configurations of the original code: average-pool resampling, 3x3 shortcuts, a 2C
# (learned-variance) output, grey images, attention at two levels, several blocks per level.
_OTHERS = {
    "pool_2c_two_attn": (dict(ch=32, out_ch=6, ch_mult=(1, 2, 2), num_res_blocks=2,
                              attn_resolutions=(16, 4), resamp_with_conv=False), 3, 16),
    "conv_shortcut_grey": (dict(ch=32, out_ch=1, ch_mult=(1, 1, 2), num_res_blocks=1,
                                attn_resolutions=(4,), resamp_with_conv=True, conv_shortcut=True),
                           1, 8),
    "one_level": (dict(ch=64, out_ch=3, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(),
                       resamp_with_conv=True), 3, 4),
}


def _random_weights(names_shapes, seed):
    rng = np.random.RandomState(seed)
    out = {}
    for name, shape in sorted(names_shapes.items()):
        leaf = name.rsplit("/", 1)[1]
        if leaf == "W":
            value = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        elif leaf == "gamma":
            value = 1 + 0.1 * rng.normal(size=shape)
        else:
            value = 0.1 * rng.normal(size=shape)
        out[name] = value.astype(np.float32)
    return out


def _write_other(tmp_path, case):
    cfg, in_ch, size = _OTHERS[case]
    arch = diffusion_tf.Architecture(
        ch=cfg["ch"], ch_mult=cfg["ch_mult"], num_res_blocks=cfg["num_res_blocks"],
        attn_levels=tuple(i for i in range(len(cfg["ch_mult"]))
                          if size // 2 ** i in cfg["attn_resolutions"]),
        resamp_with_conv=cfg["resamp_with_conv"], conv_shortcut=cfg.get("conv_shortcut", False),
        in_ch=in_ch, out_ch=cfg["out_ch"])
    shapes = diffusion_tf.expected_variables(arch)
    raw, ema = _random_weights(shapes, 1), _random_weights(shapes, 2)
    values = dict(raw, **{n + EMA: v for n, v in ema.items()}, global_step=np.int64(5))
    prefix = ref.write_checkpoint(str(tmp_path / "model.ckpt-5"), values)
    return prefix, cfg, in_ch, size, raw, ema


@pytest.mark.parametrize("case", sorted(_OTHERS))
def test_other_configurations_match_the_original_network(tmp_path, case):
    prefix, cfg, in_ch, size, raw, ema = _write_other(tmp_path, case)
    x = np.random.RandomState(3).normal(size=(2, size, size, in_ch))
    t = np.array([3.0, 640.5])
    for weights, use_ema in ((ema, True), (raw, False)):
        params = ref.Params(weights)
        want = ref.unet_forward(params, x, t, **cfg)
        assert params.read == set(weights)  # the converter names exactly what the original reads
        net, _ = models.load(prefix, image_size=size, ema=use_ema, **_LINEAR)
        np.testing.assert_allclose(_call(net, x, t), want, rtol=0, atol=1e-5)


def test_a_learned_variance_checkpoint_samples_with_its_eps_channels(tmp_path):
    prefix = _write_other(tmp_path, "pool_2c_two_attn")[0]
    den, net = models.load_denoiser(prefix, image_size=16, **_LINEAR)
    x = np.random.RandomState(4).normal(size=(2, 16, 16, 3)).astype(np.float32)
    t = np.array([10.0, 500.0], np.float32)
    full = _call(net, x, t)
    assert full.shape == (2, 16, 16, 6)
    _, eps = den(x, t)
    np.testing.assert_array_equal(eps.numpy(), full[..., :3])
    with pytest.raises(ValueError, match="accepted with prediction eps, not x"):
        models.load(prefix, image_size=16, prediction="x", **_LINEAR)


# ---- a checkpoint that does not fit -------------------------------------------------------------

def _mutated(values, tmp_path, change):
    values = dict(values)
    change(values)
    return ref.write_checkpoint(str(tmp_path / "model.ckpt-7"), values)


def _drop(*names):
    return lambda v: [v.pop(n) for n in names]


def _misshape(v):
    w = v["model/down_0/block_0/conv2/W"]
    v["model/down_0/block_0/conv2/W"] = w[:, :, :16]
    v["model/down_0/block_0/conv2/W" + EMA] = w[:, :, :16]


def _extra(v):
    v["model/down_0/block_0/conv3/W"] = np.zeros([3, 3, 32, 32], np.float32)


def _not_diffusion_tf(v):
    v.clear()
    v["dense/kernel"] = np.zeros([3, 4], np.float32)
    v["global_step"] = np.int64(3)


@pytest.mark.parametrize("change,message", [
    (_drop("model/down_1/block_0/nin_shortcut/W", "model/down_1/block_0/nin_shortcut/W" + EMA),
     "variable model/down_1/block_0/nin_shortcut/W is missing, expected shape [32, 64]"),
    (_drop("model/mid/attn_1/q/b", "model/mid/attn_1/q/b" + EMA),
     "variable model/mid/attn_1/q/b is missing, expected shape [64]"),
    (_misshape, "variable model/down_0/block_0/conv2/W has shape [3, 3, 16, 32], expected "
     "[3, 3, 32, 32]"),
    (_extra, "unexpected variable model/down_0/block_0/conv3/W [3, 3, 32, 32] (1 in all)"),
    (_drop("model/conv_out/b" + EMA), "the EMA shadow model/conv_out/b/ExponentialMovingAverage "
     "is missing, expected [3] (pass ema=False / --noema for the raw weights)"),
    (_not_diffusion_tf, "is not a checkpoint of diffusion_tf's UNet (Ho et al.'s original code): "
     "it has no <scope>/conv_in/W variable among its 2 (e.g. dense/kernel, global_step)"),
    (_drop(*[f"model/down_1/{s}" for s in ("block_0/conv1/W", "block_0/conv1/W" + EMA)]),
     "cannot infer diffusion_tf's UNet architecture: model/down_1/block_0/conv1/W is missing"),
])
def test_a_checkpoint_that_does_not_fit_fails_with_one_line(values, tmp_path, change, message):
    prefix = _mutated(values, tmp_path, change)
    with pytest.raises(ValueError) as info:
        models.load(prefix, image_size=16, **_LINEAR)
    text = str(info.value)
    assert message in text and "\n" not in text, text
    if "expected" in message and "cannot infer" not in message:
        assert "ch=32, ch_mult=(1, 2), num_res_blocks=1" in text  # what it was compared with


def test_a_damaged_or_foreign_checkpoint_fails_with_one_line(tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(FIXTURE, damaged)
    (damaged / "model.ckpt-1000.index").write_bytes(b"garbage")
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-9"\n')
    cases = {str(damaged / "model.ckpt-1000"): "cannot read the checkpoint",
             str(orphan): "no checkpoint to read in"}
    for path, message in cases.items():
        with pytest.raises(ValueError) as info:
            models.load(path, image_size=16, **_LINEAR)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_optimizer_slots_are_ignored_and_a_checkpoint_without_shadows_loads_its_raw_weights(
        values, tmp_path, io):
    def slots_no_ema(v):
        for name in [n for n in v if n.endswith(EMA)]:
            del v[name]
        v["model/conv_in/W/Adam"] = np.zeros([3, 3, 3, 32], np.float32)
        v["beta1_power"] = np.float32(0.9)

    prefix = _mutated(values, tmp_path, slots_no_ema)
    net, _ = models.load(prefix, image_size=16, **_LINEAR)  # ema=True, none there: raw
    np.testing.assert_allclose(_call(net, io["x"], io["t"]), io["out_raw"], rtol=0, atol=1e-5)


def test_a_checkpoint_of_ema_weights_only_loads_them(values, tmp_path, io):
    prefix = _mutated(values, tmp_path, lambda v: [v.pop(n) for n in list(v)
                                                   if n.startswith("model/") and not n.endswith(EMA)])
    net, _ = models.load(prefix, image_size=16, **_LINEAR)
    np.testing.assert_allclose(_call(net, io["x"], io["t"]), io["out_ema"], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="the raw weight model/temb/dense0/W is missing"):
        models.load(prefix, image_size=16, ema=False, **_LINEAR)


@pytest.mark.parametrize("kwargs,message", [
    (dict(schedule="linear_beta"), "does not record its image size: give image_size"),
    (dict(image_size=16), "carries no noise schedule"),
    (dict(image_size=12, schedule="linear_beta"), None),  # any multiple of 2^(levels - 1) works
    (dict(image_size=15, schedule="linear_beta"), "image_size must be a positive multiple of "
     "2^1 = 2 (the checkpoint's UNet has 2 resolutions), got 15"),
    (dict(model_preset="cifar10"), "is not the cifar10 model: its UNet has ch=32"),
    (dict(model_preset="cifar10", schedule="cosine"), "model preset cifar10 fixes image_size 32, "
     "its schedule and prediction eps; drop schedule 'cosine'"),
    (dict(model_preset="imagenet"), "unknown model preset 'imagenet'; accepted: cifar10, "
     "celeba_hq, lsun_bedroom, lsun_cat, lsun_church"),
])
def test_image_size_schedule_and_preset_errors(kwargs, message):
    if message is None:
        net, _ = models.load(PREFIX, **kwargs)
        assert models.image_shape(net) == (12, 12, 3)
        return
    with pytest.raises(ValueError) as info:
        models.load(PREFIX, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_checkpoint_options_are_refused_for_other_models():
    with pytest.raises(ValueError, match="image_size=8: for TF1 checkpoints .diffusion_tf. only, "
                                         "and 'digits' is a bundled digits DDPM"):
        models.load("digits", image_size=8)


def test_a_preset_carries_image_size_and_schedule(monkeypatch, io):
    fixture_arch = diffusion_tf.infer_architecture(PREFIX)
    cosine = schedules.cosine(num_timesteps=500).get_config()
    monkeypatch.setitem(diffusion_tf.PRESETS, "fixture", (16, cosine, "eps", fixture_arch))
    net, sched = models.load(PREFIX, model_preset="fixture")
    assert sched.get_config() == cosine and models.image_shape(net) == (16, 16, 3)
    np.testing.assert_allclose(_call(net, io["x"], io["t"]), io["out_ema"], rtol=0, atol=1e-5)
    assert models.carries_schedule(PREFIX, "fixture") and not models.carries_schedule(PREFIX)


def test_the_presets_are_the_released_architectures():
    # Ho et al.'s own counts (scripts/run_cifar.py: "35.7M"; run_lsun.py / run_celebahq.py: "114M").
    sizes = {"cifar10": 35.7e6, "celeba_hq": 114e6, "lsun_bedroom": 114e6, "lsun_cat": 114e6,
             "lsun_church": 114e6}
    for name, (size, sched, prediction, arch) in diffusion_tf.PRESETS.items():
        params = sum(int(np.prod(s)) for s in diffusion_tf.expected_variables(arch).values())
        assert params == pytest.approx(sizes[name], rel=0.01), name
        assert sched == dict(kind="linear_beta", num_timesteps=1000, beta_start=1e-4,
                             beta_end=0.02) and prediction == "eps"
        # attention at 16 x 16, as every released configuration has it
        assert [size // 2 ** i for i in arch.attn_levels] == [16], name
    cifar = unet.build_unet(diffusion_tf.keras_config(diffusion_tf.PRESETS["cifar10"][3], 32))
    assert cifar.count_params() == sum(
        int(np.prod(s)) for s in diffusion_tf.expected_variables(diffusion_tf.PRESETS["cifar10"][3])
        .values())


# ---- the binaries -------------------------------------------------------------------------------

def test_ddss_sample_runs_on_a_checkpoint(tmp_path):
    out = str(tmp_path / "ddim.npz")
    proc = testing.run_binary("ddss_sample", f"--model={PREFIX}", "--image_size=16",
                              "--schedule=linear_beta", "--num_timesteps=1000", "--family=ddim",
                              "--num_steps=5", "--num_samples=3", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    images = np.load(out)["images"]
    assert images.shape == (3, 16, 16, 3) and np.isfinite(images).all()
    bad = testing.run_binary("ddss_sample", f"--model={PREFIX}", "--model_preset=lsun_church",
                             "--family=ddim", f"--out={out}")
    lines = [ln for ln in bad.stderr.splitlines() if "error:" in ln]
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(lines) == 1, bad.stderr
    assert "is not the lsun_church model" in lines[0]
