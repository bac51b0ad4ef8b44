"""The exported SavedModel as a server sees it (README: "Exit codes and faults"): non-finite
inputs refused in its own graph (the TF2 loader and the TF1 session loader TF Serving uses),
a damaged export refused in one line, and one loaded model answering many threads of mixed
good and bad requests exactly as it answers each request alone.
"""

import concurrent.futures
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import export_helpers as helpers
import testing
from ddss_tf import export, noise as noise_lib, sampling

_N = 2
_SHAPE = [8, 8, 1]


def _inputs(bad):
    """(x_T, noise) of _N samples of the shared export, with `bad` written into one entry."""
    x_T, noise = (np.array(a) for a in noise_lib.draw([0, 3], helpers.K, [_N, *_SHAPE]))
    where, value = bad
    target = x_T if where == "x_T" else noise
    target.flat[5] = value
    return x_T, noise


_BAD = [("x_T", np.nan), ("x_T", np.inf), ("noise", -np.inf)]


@pytest.mark.parametrize("bad", _BAD, ids=lambda b: f"{b[0]}={b[1]}")
def test_from_noise_refuses_non_finite_input_in_the_savedmodels_graph(bad):
    e = helpers.exported()
    x_T, noise = _inputs(bad)
    phrase = f"{bad[0]} must hold finite numbers"
    from_noise = tf.saved_model.load(e.version_dir).signatures["from_noise"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=phrase):
        from_noise(x_T=tf.constant(x_T), noise=tf.constant(noise))
    # The TF1 session loader (TF Serving's): the same graph, the same refusal.
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        sig = tf.compat.v1.saved_model.load(sess, ["serve"], e.version_dir).signature_def[
            "from_noise"]
        feed = {sig.inputs["x_T"].name: x_T, sig.inputs["noise"].name: noise}
        with pytest.raises(tf.errors.InvalidArgumentError, match=phrase):
            sess.run(sig.outputs["images_uint8"].name, feed)
        good = sess.run(sig.outputs["images"].name,
                        {sig.inputs["x_T"].name: np.nan_to_num(x_T, posinf=0, neginf=0),
                         sig.inputs["noise"].name: np.nan_to_num(noise, posinf=0, neginf=0)})
        assert np.all(np.isfinite(good))
    # ddss_sample's sources refuse them before running, naming the entry.
    with pytest.raises(ValueError, match=rf"{phrase} .*{bad[0]}\["):
        export.load_sampler(e.version_dir).from_noise(x_T, noise)
    with pytest.raises(ValueError, match=rf"{phrase} .*{bad[0]}\["):
        sampling.LayerSource(e.layer, image_shape=_SHAPE).from_noise(x_T, noise)


def test_finite_input_that_overflows_in_the_chain_is_refused_not_a_nan_image():
    e = helpers.exported()
    x_T, noise = _inputs(("x_T", 3e38))  # finite, far outside a normal draw
    with pytest.raises(tf.errors.InvalidArgumentError, match="images are not finite"):
        export.load_sampler(e.version_dir).from_noise(x_T, noise)


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


_DAMAGE = {
    "truncated variables data": lambda d: _truncate(
        os.path.join(d, "variables", "variables.data-00000-of-00001")),
    "emptied variables index": lambda d: _truncate(os.path.join(d, "variables",
                                                                "variables.index")),
    "missing variables": lambda d: shutil.rmtree(os.path.join(d, "variables")),
    "truncated saved_model.pb": lambda d: _truncate(os.path.join(d, "saved_model.pb")),
    "truncated fingerprint.pb": lambda d: _truncate(os.path.join(d, "fingerprint.pb")),
}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_a_damaged_export_is_one_line_exit_2_naming_its_directory(tmp_path, damage):
    base = tmp_path / "export"
    shutil.copytree(helpers.exported().base, base)
    version = str(base / "1")
    _DAMAGE[damage](version)
    with pytest.raises(ValueError, match=f"the exported sampler {version} is damaged"):
        export.load_sampler(str(base))
    out = tmp_path / "s.npz"
    proc = testing.run_binary("ddss_sample", f"--sampler={base}", "--num_samples=2",
                              f"--out={out}", env=testing.binary_env(tmp_path))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1 and f"the exported sampler {version} is damaged" in lines[0], lines
    assert "export the sampler again" in lines[0]
    assert not out.exists()


# ---- serving under load ----------------------------------------------------------------------

def _requests(rng, count, k, max_n):
    """`count` mixed requests (kind, inputs, good): serving_default with different seeds and
    counts, from_noise, coefficients, and bad ones of each signature."""
    out = []
    for i in range(count):
        kind = ["serving_default", "from_noise", "coefficients", "bad"][i % 4]
        n = int(rng.integers(1, max_n + 1))
        if kind == "serving_default":
            seed = [int(rng.integers(0, 3)), int(rng.integers(-2 ** 31, 2 ** 31))]
            out.append((kind, dict(num_samples=np.int32(n), seed=np.int32(seed)), True))
        elif kind == "from_noise":
            x_T, z = noise_lib.draw([1, int(rng.integers(0, 1000))], k, [n, *_SHAPE])
            out.append((kind, dict(x_T=np.array(x_T), noise=np.array(z)), True))
        elif kind == "coefficients":
            out.append((kind, {}, True))
        else:
            x_T, z = (np.array(a) for a in noise_lib.draw([2, i], k, [n, *_SHAPE]))
            x_T.flat[i % x_T.size] = np.nan
            out.append([("serving_default", dict(num_samples=np.int32(max_n + 1),
                                                 seed=np.int32([0, i])), False),
                        ("serving_default", dict(num_samples=np.int32(n),
                                                 seed=np.int32([0, i, 1])), False),
                        ("from_noise", dict(x_T=x_T, noise=np.array(z)), False),
                        ("from_noise", dict(x_T=np.zeros([n, *_SHAPE], np.float32),
                                            noise=np.zeros([k + 1, n, *_SHAPE], np.float32)),
                         False)][(i // 4) % 4])
    return out


def _call(signatures, request):
    """{output: array} of one request, or the InvalidArgumentError it raised."""
    kind, inputs, _ = request
    try:
        out = signatures[kind](**{name: tf.constant(v) for name, v in inputs.items()})
    except tf.errors.InvalidArgumentError as e:
        return e
    return {name: v.numpy() for name, v in out.items()}


def test_one_loaded_export_answers_threads_of_mixed_requests_as_each_alone():
    e = helpers.exported()
    signatures = tf.saved_model.load(e.version_dir).signatures
    requests = _requests(np.random.default_rng(0), 40, helpers.K, helpers.MAX_NUM_SAMPLES)
    alone = [_call(signatures, r) for r in requests]
    for request, reply in zip(requests, alone):
        assert isinstance(reply, dict) == request[2], (request[0], reply)
    order = np.random.default_rng(1).permutation(len(requests))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        replies = dict(zip(order, pool.map(lambda i: _call(signatures, requests[i]), order)))
    for i, request in enumerate(requests):
        if not request[2]:  # refused again, with the same message: nothing leaks between calls
            assert isinstance(replies[i], tf.errors.InvalidArgumentError), (request[0], i)
            assert _first_assert(replies[i]) == _first_assert(alone[i])
            continue
        assert isinstance(replies[i], dict), (request[0], i, replies[i])
        assert sorted(replies[i]) == sorted(alone[i])
        for name in alone[i]:
            np.testing.assert_array_equal(replies[i][name], alone[i][name], err_msg=name)


def _first_assert(error):
    """The message of the assertion an InvalidArgumentError reports."""
    return next((line for line in error.message.splitlines() if "assertion failed" in line
                 or "must" in line), error.message)
