"""One parameterised suite over every sampler family (the layer contract of docs/design.md, "Public interfaces")."""

import json

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import denoisers
from ddss_tf import noise as noise_lib
from ddss_tf import samplers
from ddss_tf import schedules

import samplers_gaussian as gauss

K = 8
SHAPE = [4, 3, 3, 2]

CASES = [
    ("ddpm", {}),
    ("ddpm", {"variance": "large", "stride": "linear"}),
    ("ddim", {}),
    ("ddim", {"eta": 0.5, "time": True}),
    ("dpm_solver_pp_2m", {}),
    ("dpm_solver_pp_3m", {"stride": "edm", "time": True}),
    ("unipc", {"stride": "time_uniform"}),
    ("unipc_3", {"time": True}),
    ("ipndm", {}),
    ("ipndm", {"stride": "logsnr_uniform", "time": True}),
    ("ddim_sigma", {}),
    ("vars", {"time": True}),
    ("rddim", {"init": "ddim"}),
    ("ggdm", {}),
    ("ggdm", {"pred": True, "time": True, "stride": "trailing"}),
    ("ggdm", {"pred": True, "init": "dpm_solver_pp_2m"}),
    ("ggdm", {"pred": True, "init": "unipc", "time": True}),
    ("ggdm", {"pred": True, "init": "ipndm"}),
    ("ggdm", {"pred": True, "init": "unipc_3", "time": True}),
]
LEARNABLE = [c for c in CASES if c[0] in ("ddim_sigma", "vars", "rddim", "ggdm") or c[1].get("time")]


def _ids(cases):
    return [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in cases]


@pytest.fixture(scope="module")
def den():
    return gauss.denoiser(schedules.linear_beta(1000))


def _inputs(seed=0, num_steps=K, shape=SHAPE):
    return noise_lib.draw(seed, num_steps, shape)


def _perturb(layer, scale=0.3, seed=1):
    rng = np.random.default_rng(seed)
    for v in layer.trainable_variables:
        v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))


def test_names_lists_every_family():
    assert samplers.names() == sorted(
        ["ddpm", "ddim", "ddim_sigma", "vars", "rddim", "ggdm", "dpm_solver_pp_2m",
         "dpm_solver_pp_3m", "unipc", "unipc_3", "ipndm"])
    assert samplers.solver_names() == ["dpm_solver_pp_2m", "dpm_solver_pp_3m", "unipc",
                                       "unipc_3", "ipndm"]
    assert samplers.inits("ggdm") == ("ddpm", "ddim", *samplers.solver_names())


@pytest.mark.parametrize("name, opts", CASES, ids=_ids(CASES))
def test_layer_contract(den, name, opts):
    layer = samplers.create(name, den, num_steps=K, **opts)
    x_T, noise = _inputs()
    x0 = layer(x_T, noise)
    assert x0.shape == x_T.shape and x0.dtype == tf.float32
    assert np.all(np.isfinite(x0.numpy()))
    t = layer.query_times()
    assert t.dtype == np.float64 and t.shape == (K,) and np.all(np.diff(t) < 0)
    assert 0 <= t[-1] and t[0] <= 999
    coefs = layer.coefficients()
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in coefs.values())
    assert all(v.shape[0] == K and np.all(np.isfinite(v)) for v in coefs.values())
    np.testing.assert_allclose(coefs["query_times"], t, rtol=1e-6)
    for key in ("std", "sigma"):
        if key in coefs:
            assert np.all(coefs[key] >= 0)


@pytest.mark.parametrize("name, opts", CASES, ids=_ids(CASES))
def test_config_round_trip(den, name, opts):
    layer = samplers.create(name, den, num_steps=K, **opts)
    _perturb(layer)
    config = json.loads(json.dumps(layer.get_config()))
    clone = samplers.from_config(config, den)
    assert clone.get_config() == layer.get_config()
    assert [v.name for v in clone.weights] == [v.name for v in layer.weights]
    clone.set_weights(layer.get_weights())
    x_T, noise = _inputs()
    np.testing.assert_array_equal(clone(x_T, noise).numpy(), layer(x_T, noise).numpy())
    with pytest.raises(ValueError, match="denoiser"):
        type(layer).from_config(config)


@pytest.mark.parametrize("name, opts", CASES, ids=_ids(CASES))
def test_xla_matches_eager(den, name, opts):
    layer = samplers.create(name, den, num_steps=K, **opts)
    _perturb(layer, scale=0.1)
    x_T, noise = _inputs(seed=2)
    eager = layer(x_T, noise).numpy()
    xla = tf.function(lambda x, z: layer(x, z), jit_compile=True)(x_T, noise).numpy()
    graph = tf.function(lambda x, z: layer(x, z))(x_T, noise).numpy()
    np.testing.assert_allclose(xla, eager, atol=1e-5, rtol=0)
    np.testing.assert_allclose(graph, eager, atol=1e-5, rtol=0)


REPRODUCE = [(name, init, extra) for name in ("ddim_sigma", "rddim", "ggdm", "vars")
             for init in ("ddpm", "ddim") if not (name == "vars" and init == "ddim")
             for extra in ({}, {"time": True}, {"pred": True}) if not (extra.get("pred") and name != "ggdm")]


@pytest.mark.parametrize("name, init, extra", REPRODUCE, ids=[f"{n}-{i}-{e}" for n, i, e in REPRODUCE])
@pytest.mark.parametrize("stride", ["quadratic", "trailing"])
def test_untrained_learnable_family_reproduces_its_baseline(den, name, init, extra, stride):
    """Same x_T and noise: the initialised layer equals DDPM / DDIM(eta=0) to float32 rounding."""
    k = 20
    x_T, noise = _inputs(seed=5, num_steps=k, shape=[16, 2, 2, 1])
    baseline = samplers.create(init, den, num_steps=k, stride=stride)(x_T, noise).numpy()
    layer = samplers.create(name, den, num_steps=k, stride=stride, init=init, **extra)
    np.testing.assert_allclose(layer(x_T, noise).numpy(), baseline, atol=1e-5, rtol=0)


@pytest.mark.parametrize("solver_name", samplers.solver_names())
@pytest.mark.parametrize("k", [2, 3, 5, 20])
@pytest.mark.parametrize("stride", ["quadratic", "logsnr_uniform"])
@pytest.mark.parametrize("extra", [{}, {"time": True}, {"loop": True}])
def test_untrained_ggdm_from_the_solver_is_the_solver(den, k, stride, extra, solver_name):
    """init=<solver>: the solver's steps over states (all earlier states weighed, weights
    outside the sigmoid's range) give the solver, itself checked against a float64 numpy
    reference of its paper's algorithm (samplers_reference_test, samplers_solvers_test)."""
    x_T, noise = _inputs(seed=7, num_steps=k, shape=[16, 2, 2, 1])
    solver = samplers.create(solver_name, den, num_steps=k, stride=stride)(x_T).numpy()
    layer = samplers.create("ggdm", den, num_steps=k, stride=stride, pred=True,
                            init=solver_name, **extra)
    np.testing.assert_allclose(layer(x_T, noise).numpy(), solver, atol=5e-5, rtol=0)
    if k == 5:  # the solver form leaves the sigmoid's range: the reason for plain reals
        coefs = layer.coefficients()
        assert np.max(coefs["mu_x0"]) > 1 or np.min(coefs["mu"]) < 0


def test_ggdm_from_the_solver_needs_pred(den):
    with pytest.raises(ValueError, match="init 'dpm_solver_pp_2m' needs pred=True"):
        samplers.create("ggdm", den, num_steps=5, init="dpm_solver_pp_2m")


@pytest.mark.parametrize("name", ["ddim"] + samplers.solver_names())
def test_deterministic_families_ignore_noise(den, name):
    layer = samplers.create(name, den, num_steps=K)
    x_T, noise = _inputs()
    out = layer(x_T).numpy()
    np.testing.assert_array_equal(layer(x_T, noise).numpy(), out)
    np.testing.assert_array_equal(layer(x_T, 5.0 * noise).numpy(), out)


def _loss_and_grads(layer, x_T, noise):
    with tf.GradientTape() as tape:
        x0 = layer(x_T, noise)
        loss = tf.reduce_mean(tf.square(x0 - 0.1)) + tf.reduce_mean(x0[..., :1])
    return loss, tape.gradient(loss, layer.trainable_variables)


@pytest.mark.parametrize("name, opts", LEARNABLE, ids=_ids(LEARNABLE))
def test_gradients_are_finite_nonzero_and_equal_with_remat(den, name, opts):
    with_remat = samplers.create(name, den, num_steps=K, **opts)
    without = samplers.create(name, den, num_steps=K, remat=False, **opts)
    _perturb(with_remat, scale=0.1)
    without.set_weights(with_remat.get_weights())
    x_T, noise = _inputs(seed=4)
    loss_r, grads_r = _loss_and_grads(with_remat, x_T, noise)
    loss_n, grads_n = _loss_and_grads(without, x_T, noise)
    assert float(loss_r) == float(loss_n)
    assert len(grads_r) == len(with_remat.trainable_variables) > 0
    for v, g_r, g_n in zip(with_remat.trainable_variables, grads_r, grads_n):
        assert g_r is not None, v.name
        g_r, g_n = g_r.numpy(), g_n.numpy()
        assert np.all(np.isfinite(g_r)), v.name
        assert np.any(g_r != 0), v.name
        np.testing.assert_allclose(g_r, g_n, rtol=1e-5, atol=1e-7 * np.abs(g_n).max(), err_msg=v.name)


def test_gradients_under_xla(den):
    # Real-valued query times: at an integer t (a knot of the schedule's piecewise-linear
    # log-SNR) d lambda / dt jumps, and XLA's and TF's rounding of t may pick either side.
    layer = samplers.create("ggdm", den, num_steps=5, pred=True, time=True, stride="logsnr_uniform")
    x_T, noise = _inputs(seed=6, num_steps=5)

    @tf.function(jit_compile=True)
    def grads(x, z):
        return _loss_and_grads(layer, x, z)

    loss_x, grads_x = grads(x_T, noise)
    loss_e, grads_e = _loss_and_grads(layer, x_T, noise)
    np.testing.assert_allclose(float(loss_x), float(loss_e), rtol=1e-5)
    for g_x, g_e in zip(grads_x, grads_e):
        np.testing.assert_allclose(g_x.numpy(), g_e.numpy(), rtol=1e-3, atol=1e-5 * np.abs(g_e).max())


def test_remat_recomputes_the_network_in_the_backward_pass():
    sched = schedules.linear_beta(1000)
    inner = gauss.denoiser(sched).fn
    calls = []

    def eps_fn(x_t, t):
        calls.append(1)
        return inner(x_t, t)

    den = denoisers.from_eps_fn(eps_fn, sched)
    x_T, noise = _inputs()
    # With remat every call is run again in the backward pass, except the first: its
    # inputs (x_T, a fixed tau_K) depend on no variable, so nothing flows through it.
    for remat, expected in ((True, 2 * K - 1), (False, K)):
        layer = samplers.create("ddim_sigma", den, num_steps=K, remat=remat)
        calls.clear()
        _loss_and_grads(layer, x_T, noise)
        assert len(calls) == expected, (remat, len(calls))


def _stateless_loss_and_grads(layer, values, x_T, noise):
    with tf.GradientTape() as tape:
        tape.watch(values)
        x0, _ = layer.stateless_call(values, [], x_T, noise)
        loss = tf.reduce_mean(tf.square(x0 - 0.1)) + tf.reduce_mean(x0[..., :1])
    return loss, tape.gradient(loss, values)


@pytest.mark.parametrize("xla", [False, True])
def test_runs_in_a_mirrored_strategy_replica_function(den, xla):
    """Per-replica losses and gradients equal the single-device ones.

    XLA: a jit-compiled function cannot read a MirroredVariable's copy on a second
    logical CPU ("Trying to access resource ... located in device CPU:1 from device
    CPU:0", with plain tf.Variables too), so the compiled per-replica function takes
    the variable values as tensors and calls the layer with Keras' stateless_call.
    """
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "tests/conftest.py splits the CPU into 2 logical devices"
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():  # real-valued times: see test_gradients_under_xla
        layer = samplers.create("ggdm", den, num_steps=5, pred=True, time=True, stride="logsnr_uniform")
    x_T, noise = _inputs(seed=7, num_steps=5)
    halves = [(x_T[:2], noise[:, :2]), (x_T[2:], noise[:, 2:])]
    compiled = tf.function(_stateless_loss_and_grads, jit_compile=True)

    def replica_fn(x, z):
        if not xla:
            return _loss_and_grads(layer, x, z)
        values = [tf.identity(v.value) for v in layer.trainable_variables]
        return compiled(layer, values, x, z)

    @tf.function
    def distributed(dist_x, dist_z):
        return strategy.run(replica_fn, args=(dist_x, dist_z))

    dist_x, dist_z = (strategy.experimental_distribute_values_from_function(
        lambda ctx, j=j: halves[ctx.replica_id_in_sync_group][j]) for j in (0, 1))
    losses, grads = distributed(dist_x, dist_z)
    for r, (x, z) in enumerate(halves):
        loss, expected = _loss_and_grads(layer, x, z)
        got_loss = strategy.experimental_local_results(losses)[r].numpy()
        np.testing.assert_allclose(got_loss, loss.numpy(), rtol=1e-5)
        for g_d, g_e in zip(grads, expected):
            got = strategy.experimental_local_results(g_d)[r].numpy()
            np.testing.assert_allclose(got, g_e.numpy(), rtol=1e-3, atol=1e-5 * np.abs(g_e).max())
