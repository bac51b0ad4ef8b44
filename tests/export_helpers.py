"""A tiny UNet and a learned-looking sampler, exported once per test session (test helper).

The UNet has random weights (the real zero-initialised output conv would make every
sample the same) and the sampler's variables are moved off their initial values, so
a wrong variable or coefficient shows in the images.
"""

import atexit
import functools
import json
import os
import shutil
import sys
import tempfile
import types

import numpy as np

import testing
from ddss_tf import denoisers, export, noise as noise_lib, samplers, schedules
from ddss_tf.nets import unet

NET_CONFIG = dict(unet.DIGITS_CONFIG, ch=8, ch_mult=[1], num_res_blocks=1, attn_resolutions=[])
SCHEDULE = dict(kind="linear_beta", num_timesteps=1000, beta_start=1e-4, beta_end=0.02)
K = 3
MAX_NUM_SAMPLES = 8
SEED = 7


def tiny_net(seed=1, image_shape=(8, 8, 1), name="tiny"):
    """The tiny UNet [x_t, t] -> eps with seeded random N(0, 0.05^2) weights."""
    net = unet.build_unet(dict(NET_CONFIG, image_shape=image_shape), name=name)
    rng = np.random.RandomState(seed)
    for w in net.weights:
        w.assign(rng.normal(0.0, 0.05, w.shape).astype(np.float32))
    return net


def tiny_denoiser(net=None, **kwargs):
    return denoisers.from_keras_model(net or tiny_net(), schedules.from_config(SCHEDULE), **kwargs)


def digits_coefficients_document():
    """The coefficients.json content (a dict) of an untrained GGDM +PRED +TIME, K = 2, on the
    bundled digits model: a valid file to damage."""
    from ddss_tf import pretrained

    net, sched = pretrained.digits_ddpm()
    layer = samplers.create("ggdm", denoisers.from_keras_model(net, sched), num_steps=2,
                            pred=True, time=True)
    return export.coefficients_document(layer, export.model_fingerprint(net))


def learned_layer(den, family="ggdm", seed=2, **options):
    """A K-step sampler whose variables are moved off their initial values."""
    layer = samplers.create(family, den, num_steps=K, **options)
    rng = np.random.RandomState(seed)
    for v in layer.weights:
        v.assign(v.numpy() + rng.normal(0.0, 0.1, v.shape).astype(np.float32))
    return layer


def reference_images(layer, seed_pair, n):
    """What an export of `layer` must return for a seed pair: (float images, uint8 images)."""
    x_T, noise = noise_lib.draw(seed_pair, layer.num_steps, [n, 8, 8, 1])
    x0 = np.clip(layer(x_T, noise).numpy(), *layer.denoiser.data_range)
    return x0, np.asarray(export.to_uint8(x0, layer.denoiser.data_range))


def save_model_dir(net, path):
    """Write `net` as a ddss_train_model directory (config.json + model.weights.h5)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(dict(kind="ddpm", prediction="eps", net=NET_CONFIG, schedule=SCHEDULE), f)
    net.save_weights(os.path.join(path, "model.weights.h5"))
    return path


def temp_dir():
    path = tempfile.mkdtemp(prefix="ddss_export_test_")
    atexit.register(shutil.rmtree, path, True)
    return path


@functools.lru_cache(maxsize=None)
def exported():
    """One GGDM +PRED +TIME export shared by the test modules (built on first use).

    Fields: net, den, layer, work (temp dir), base (export base dir), version_dir,
    coefficients (path of coefficients.json), model_dir (the tiny net on disk).
    """
    work = temp_dir()
    net = tiny_net()
    den = tiny_denoiser(net)
    layer = learned_layer(den, "ggdm", pred=True, time=True)
    coefs = export.write_coefficients(layer, os.path.join(work, "coefficients.json"),
                                      export.model_fingerprint(net))
    base = os.path.join(work, "export")
    version_dir = export.export_sampler(layer, base, max_num_samples=MAX_NUM_SAMPLES)
    return types.SimpleNamespace(net=net, den=den, layer=layer, work=work, base=base,
                                 version_dir=version_dir, coefficients=coefs,
                                 model_dir=save_model_dir(net, os.path.join(work, "tiny")))


def quiet_env():
    """testing.binary_env() with TensorFlow's C++ start-up logging off (TF_CPP_MIN_LOG_LEVEL=2)."""
    return testing.binary_env(TF_CPP_MIN_LOG_LEVEL="2")


def saved_model_cli(*args):
    return testing.run([os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), *args],
                       env=quiet_env())
