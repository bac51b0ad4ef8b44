"""Conditional denoisers and classifier-free guidance, against a float64 numpy reference."""

import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import denoisers, samplers, schedules

import toy_networks

NUM_CLASSES = 10
_TABLE = np.random.default_rng(7).standard_normal(NUM_CLASSES + 1)  # one scale per label + null


def _net_np(x, t, c):
    """A nonlinear conditional toy network in numpy: every label gives another prediction."""
    return np.tanh(x) * _TABLE[c][:, None, None, None] + 1e-3 * t[:, None, None, None] * x ** 2


def _net_tf(x, t, c):
    scale = tf.gather(tf.constant(_TABLE, x.dtype), c)
    return tf.tanh(x) * scale[:, None, None, None] + 1e-3 * t[:, None, None, None] * x ** 2


def _inputs(seed=0, batch=4):
    rng = np.random.default_rng(seed)
    x_t = rng.standard_normal((batch, 3, 3, 1))
    t = rng.uniform(0, 999, batch)
    c = rng.integers(0, NUM_CLASSES, batch)
    return x_t, t, c


def _to_x0_eps_np(out, x_t, t, sched, prediction):
    a = np.asarray(sched.alpha(t))[:, None, None, None]
    s = np.asarray(sched.sigma(t))[:, None, None, None]
    if prediction == "eps":
        return (x_t - s * out) / a, out
    if prediction == "x":
        return out, (x_t - a * out) / s
    return a * x_t - s * out, s * x_t + a * out


@pytest.mark.parametrize("prediction", ["eps", "x", "v"])
@pytest.mark.parametrize("w", [0.0, 1.0, 3.5])
def test_guidance_matches_a_numpy_reference(prediction, w):
    sched = schedules.linear_beta()
    x_t, t, c = _inputs()
    cond = denoisers.ConditionalDenoiser(_net_tf, sched, null_condition=NUM_CLASSES,
                                         prediction=prediction)
    x0, eps = cond.guided(tf.constant(c), w)(tf.constant(x_t), tf.constant(t))

    out_c = _net_np(x_t, t, c)
    out_u = _net_np(x_t, t, np.full_like(c, NUM_CLASSES))
    want_x0, want_eps = _to_x0_eps_np((1 + w) * out_c - w * out_u, x_t, t, sched, prediction)
    np.testing.assert_allclose(x0.numpy(), want_x0, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(eps.numpy(), want_eps, rtol=1e-9, atol=1e-9)
    # The same as guiding eps itself (the published form), whatever the network predicts.
    x0_c, eps_c = _to_x0_eps_np(out_c, x_t, t, sched, prediction)
    x0_u, eps_u = _to_x0_eps_np(out_u, x_t, t, sched, prediction)
    np.testing.assert_allclose(eps.numpy(), (1 + w) * eps_c - w * eps_u, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(x0.numpy(), (1 + w) * x0_c - w * x0_u, rtol=1e-7, atol=1e-7)


def test_embedding_conditions_and_the_unguided_call():
    sched = schedules.cosine()
    rng = np.random.default_rng(3)
    x_t, t, _ = _inputs(1)
    emb = rng.standard_normal((4, 5))
    proj = rng.standard_normal(5)

    def net(x, tt, e):
        return x * tf.reduce_sum(e * proj, axis=1)[:, None, None, None]

    cond = denoisers.ConditionalDenoiser(net, sched, null_condition=np.zeros(5))
    x0, eps = cond.guided(emb, 2.0)(tf.constant(x_t), tf.constant(t))
    # The null embedding (zeros) predicts 0 here, so guidance scales the conditional by 1 + w.
    np.testing.assert_allclose(eps.numpy(), 3.0 * x_t * (emb @ proj)[:, None, None, None],
                               rtol=1e-9)
    _, eps0 = cond(tf.constant(x_t), tf.constant(t), emb)  # plain conditional
    np.testing.assert_allclose(eps0.numpy(), x_t * (emb @ proj)[:, None, None, None], rtol=1e-9)


def test_one_batched_network_call_per_step():
    """Conditional and unconditional predictions come from one call on the doubled batch;
    w = 0 (a Python number) calls the network once on the batch alone."""
    sched = schedules.linear_beta()
    batches = []

    def counting(x, t, c):
        batches.append(int(x.shape[0]))
        return _net_tf(x, t, c)

    cond = denoisers.ConditionalDenoiser(counting, sched, null_condition=NUM_CLASSES)
    x_T = tf.random.stateless_normal([3, 3, 3, 1], seed=[0, 1], dtype=tf.float64)
    labels = tf.constant([1, 2, 3])
    for w, batch in ((2.0, 6), (tf.constant(2.0, tf.float64), 6), (0.0, 3)):
        batches.clear()
        layer = samplers.create("ddim", cond.guided(labels, w), num_steps=5, remat=False)
        layer(x_T)
        assert batches == [batch] * 5


def test_labels_in_a_variable_are_read_at_every_call():
    sched = schedules.linear_beta()
    x_t, t, c = _inputs(2)
    cond = denoisers.ConditionalDenoiser(_net_tf, sched, null_condition=NUM_CLASSES)
    labels = tf.Variable(c, dtype=tf.int32)
    scale = tf.Variable(1.5, dtype=tf.float64)
    guided = cond.guided(labels, scale)
    new_c = (c + 3) % NUM_CLASSES
    labels.assign(new_c)
    scale.assign(0.5)
    _, eps = guided(tf.constant(x_t), tf.constant(t))
    _, want = cond.guided(new_c, 0.5)(tf.constant(x_t), tf.constant(t))
    np.testing.assert_allclose(eps.numpy(), want.numpy(), rtol=1e-12)


def test_bad_conditions():
    sched = schedules.linear_beta()
    cond = denoisers.ConditionalDenoiser(_net_tf, sched, null_condition=NUM_CLASSES)
    with pytest.raises(ValueError, match=r"conditioned on labels \[B\], got shape \(2, 3\)"):
        cond.guided(np.zeros((2, 3), np.int32), 1.0)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0, got -1"):
        cond.guided([1, 2], -1.0)
    with pytest.raises(ValueError, match="null_condition must be a label"):
        denoisers.ConditionalDenoiser(_net_tf, sched, null_condition=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="accepted: eps, x, v"):
        denoisers.ConditionalDenoiser(_net_tf, sched, NUM_CLASSES, prediction="score")


def test_a_conditional_keras_unet_is_wrapped_and_refused_unbound_by_samplers():
    net = toy_networks.conditional_unet(seed=1)
    rng = np.random.default_rng(1)
    sched = schedules.linear_beta()
    cond = denoisers.from_keras_model(net, sched)
    assert isinstance(cond, denoisers.ConditionalDenoiser)
    assert int(cond.null_condition) == 10 and net.trainable is False
    x = rng.standard_normal((2, 8, 8, 1)).astype(np.float32)
    t = np.array([100.0, 700.0], np.float32)
    labels = np.array([3, 8], np.int32)
    _, eps = cond.guided(labels, 2.0)(x, t)
    c_out = net([x, t, labels]).numpy()
    u_out = net([x, t, np.array([10, 10], np.int32)]).numpy()
    np.testing.assert_allclose(eps.numpy(), 3.0 * c_out - 2.0 * u_out, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"denoiser is conditional: bind .*guided\(labels"):
        samplers.create("ddim", cond, num_steps=3)
    layer = samplers.create("ddim", cond.guided(labels, 2.0), num_steps=3)  # bound: accepted
    assert layer(tf.constant(x)).shape == (2, 8, 8, 1)
