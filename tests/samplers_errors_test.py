"""Bad input raises ValueError naming what is accepted."""

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import samplers
from ddss_tf import noise as noise_lib
from ddss_tf import schedules
from ddss_tf.samplers import constraints

import samplers_gaussian as gauss

T = 100


@pytest.fixture(scope="module")
def den():
    return gauss.denoiser(schedules.linear_beta(T, 1e-3, 0.2))


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "ddjm"}, "accepted: ddim, ddim_sigma, ddpm, dpm_solver_pp_2m, dpm_solver_pp_3m, ggdm, "
                       "ipndm, rddim, unipc, unipc_3, vars"),
    ({"num_steps": 0}, r"num_steps must be an integer in \[1, 100\]"),
    ({"num_steps": T + 1}, r"num_steps must be an integer in \[1, 100\]"),
    ({"num_steps": 2.5}, r"num_steps must be an integer in \[1, 100\]"),
    ({"eta": -0.1}, "eta must be a finite number >= 0"),
    ({"eta": 1.5, "time": True}, "accepted with time=True: 0 <= eta <= 1"),
    ({"stride": "cubic"}, "accepted: edm, linear, logsnr_uniform, quadratic, time_uniform, trailing"),
    ({"name": "ddpm", "variance": "medium"}, "accepted: small, large"),
    ({"name": "ddpm", "eta": 0.0}, "does not apply to the ddpm family; ddpm accepts: variance"),
    ({"name": "ddim", "pred": True}, "does not apply to the ddim family"),
    ({"name": "rddim", "pred": True}, "does not apply to the rddim family; rddim accepts: init"),
    ({"name": "unipc", "init": "ddpm"}, "does not apply to the unipc family"),
    ({"name": "ggdm", "variance": "small"}, "does not apply to the ggdm family; ggdm accepts: init, pred"),
    ({"name": "ggdm", "init": "ddpn"}, "accepted: ddpm, ddim, dpm_solver_pp_2m, dpm_solver_pp_3m, "
                                       "unipc, unipc_3, ipndm$"),
    ({"name": "ggdm", "init": "ipndm"}, "init 'ipndm' needs pred=True"),
    ({"name": "ipndm", "init": "ddpm"}, "does not apply to the ipndm family; ipndm accepts: num_steps"),
    ({"name": "vars", "init": "ddim"}, "does not apply to the vars family; accepted: ddpm"),
    ({"name": "ggdm", "pred": 1}, "pred must be True or False"),
    ({"time": "yes"}, "time must be True or False"),
    ({"num_steps": 60, "stride": "quadratic"}, "repeats time steps"),
])
def test_bad_options(den, kwargs, match):
    kwargs = dict({"name": "ddim", "num_steps": 5}, **kwargs)
    with pytest.raises(ValueError, match=match):
        samplers.create(kwargs.pop("name"), den, **kwargs)


def test_not_a_denoiser():
    with pytest.raises(ValueError, match="denoisers.Denoiser"):
        samplers.create("ddim", lambda x, t: x, num_steps=5)


def test_eta_above_one_is_checked_on_the_stride(den):
    assert samplers.create("ddim", den, num_steps=50, stride="linear", eta=1.05).stochastic
    with pytest.raises(ValueError, match="imaginary"):
        samplers.create("ddim", den, num_steps=5, eta=50.0)


@pytest.mark.parametrize("x_shape, noise_shape, match", [
    ([2, 4, 4], [5, 2, 4, 4], r"x_T must be a float tensor \[B, H, W, C\]"),
    ([2, 4, 4, 1], [4, 2, 4, 4, 1], r"noise must have shape \[num_steps, B, H, W, C\] = \[5, 2, 4, 4, 1\]"),
    ([2, 4, 4, 1], [5, 3, 4, 4, 1], r"= \[5, 2, 4, 4, 1\], got \[5, 3, 4, 4, 1\]"),
    ([2, 4, 4, 1], [5, 2, 4, 4], "noise must have shape"),
])
def test_bad_call_shapes(den, x_shape, noise_shape, match):
    layer = samplers.create("ddpm", den, num_steps=5)
    with pytest.raises(ValueError, match=match):
        layer(tf.zeros(x_shape), tf.zeros(noise_shape))


def test_stochastic_sampler_needs_noise(den):
    with pytest.raises(ValueError, match=r"the ddpm sampler draws noise: pass noise of shape \[num_steps=5"):
        samplers.create("ddpm", den, num_steps=5)(tf.zeros([2, 4, 4, 1]))


def test_integer_images_are_rejected(den):
    with pytest.raises(ValueError, match="float tensor"):
        samplers.create("ddim", den, num_steps=5)(tf.zeros([2, 4, 4, 1], tf.int32))


def test_from_config_needs_a_family(den):
    with pytest.raises(ValueError, match="'family'"):
        samplers.from_config({"num_steps": 5}, den)


@pytest.mark.parametrize("args, match", [
    ((0, 5, [2, 4, 4]), r"shape must be \[B, H, W, C\]"),
    ((0, 0, [2, 4, 4, 1]), "num_steps must be an integer >= 1"),
    (([1, 2, 3], 5, [2, 4, 4, 1]), "seed must be an integer scalar or an int32 pair"),
    ((0.5, 5, [2, 4, 4, 1]), "seed must be an integer scalar"),
])
def test_draw_noise_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        noise_lib.draw(*args)


def test_draw_noise_is_a_function_of_the_seed():
    a = noise_lib.draw(3, 4, [2, 3, 3, 1])
    b = noise_lib.draw(tf.constant(3), 4, [2, 3, 3, 1])
    c = noise_lib.draw(4, 4, [2, 3, 3, 1])
    assert a[0].shape == [2, 3, 3, 1] and a[1].shape == [4, 2, 3, 3, 1]
    for u, v, w in zip(a, b, c):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
        assert not np.allclose(u.numpy(), w.numpy())
    assert not np.allclose(a[0].numpy(), a[1][0].numpy())


def test_constraint_inverses_round_trip():
    p = np.array([0.0, 1e-3, 0.5, 0.999, 1.0])
    got = constraints.unit_interval(tf.constant(constraints.unit_interval_inverse(p)))[0].numpy()
    np.testing.assert_allclose(got, np.clip(p, constraints.BOUNDARY, 1 - constraints.BOUNDARY), atol=1e-15)
    y = np.array([0.0, 1e-4, 2.0, 300.0])
    got = constraints.positive(tf.constant(constraints.positive_inverse(y))).numpy()
    np.testing.assert_allclose(got, np.maximum(y, constraints.BOUNDARY), rtol=1e-12)
    f = np.array([0.0, 1e-4, 0.3, 0.3, 0.9999])
    logits = tf.constant(constraints.increasing_inverse(f))
    got, complement, gaps = (a.numpy() for a in constraints.increasing(logits))
    np.testing.assert_allclose(got, f, atol=1e-8)
    np.testing.assert_allclose(complement, 1 - got, atol=1e-15)
    assert np.all(gaps > 0) and np.all(np.diff(got) > 0)
    with pytest.raises(ValueError, match="non-decreasing"):
        constraints.increasing_inverse([0.5, 0.2])
