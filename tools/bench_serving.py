"""Serving under load: one loaded export answering threads of mixed requests, in requests / s.

    PYTHONPATH=. python tools/bench_serving.py                      # 1 and 8 threads x 50 requests
    PYTHONPATH=. python tools/bench_serving.py --threads=1,2,8 --requests=20

Exports DDIM (K = --num_steps, quadratic grid) on the bundled digits DDPM into a temporary
directory, loads it once with tf.saved_model.load and sends every thread count the same mix of
requests, --requests per thread: serving_default with different seeds and counts (1 to
--max_count samples), from_noise, coefficients, and bad ones (a count over the export's
max_num_samples, a seed of 3 entries, NaN in x_T, noise with another K). The first pass, on one
thread, is each request made alone; every later reply is checked against it (good ones equal
bit for bit, bad ones refused with the same InvalidArgument), and a mismatch ends the run with
exit 1. Prints requests / s per thread count and its ratio to one thread (docs/performance.md
records them with the machine's load). Not a test: tests/faults_serving_test.py checks the same
on a tiny export.
"""

from ddss_tf import cli  # noqa: F401  (sets TF log level before TensorFlow loads)

import concurrent.futures
import os
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from ddss_tf import export, noise as noise_lib, sampling

FLAGS = flags.FLAGS
flags.DEFINE_list("threads", ["1", "8"], "Thread counts; the first pass (one thread) is the "
                  "reference every reply is compared with.")
flags.DEFINE_integer("requests", 50, "Requests per thread.", lower_bound=4)
flags.DEFINE_integer("num_steps", 10, "K of the exported DDIM.", lower_bound=1)
flags.DEFINE_integer("max_count", 16, "Largest num_samples of a request (the export's "
                     "max_num_samples).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the request mix.")


def mixed_requests(rng, count, k, max_n, image_shape):
    """`count` requests (signature, inputs, good), a quarter of each kind (module doc)."""
    out = []
    for i in range(count):
        n = int(rng.integers(1, max_n + 1))
        kind = i % 4
        if kind == 0:
            seed = [0, int(rng.integers(0, 2 ** 31))]
            out.append(("serving_default", dict(num_samples=np.int32(n), seed=np.int32(seed)),
                        True))
        elif kind == 1:
            x_T, z = noise_lib.draw([1, int(rng.integers(0, 2 ** 31))], k, [n, *image_shape])
            out.append(("from_noise", dict(x_T=np.array(x_T), noise=np.array(z)), True))
        elif kind == 2:
            out.append(("coefficients", {}, True))
        else:
            zeros = np.zeros([n, *image_shape], np.float32)
            nan = zeros.copy()
            nan.flat[i % nan.size] = np.nan
            out.append([
                ("serving_default", dict(num_samples=np.int32(max_n + 1), seed=np.int32([0, i])),
                 False),
                ("serving_default", dict(num_samples=np.int32(n), seed=np.int32([0, i, 1])),
                 False),
                ("from_noise", dict(x_T=nan, noise=np.zeros([k, n, *image_shape], np.float32)),
                 False),
                ("from_noise", dict(x_T=zeros, noise=np.zeros([k + 1, n, *image_shape],
                                                               np.float32)), False),
            ][(i // 4) % 4])
    return out


def call(signatures, request):
    """{output: array}, or the InvalidArgumentError's assertion line."""
    kind, inputs, _ = request
    try:
        out = signatures[kind](**{name: tf.constant(v) for name, v in inputs.items()})
    except tf.errors.InvalidArgumentError as e:
        return next((line for line in e.message.splitlines() if "assertion failed" in line
                     or "must" in line), e.message)
    return {name: v.numpy() for name, v in out.items()}


def serve(signatures, requests, threads):
    """(replies in request order, seconds) with `threads` threads."""
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        replies = list(pool.map(lambda r: call(signatures, r), requests))
    return replies, time.perf_counter() - start


def mismatches(requests, replies, alone):
    """Indices whose reply differs from the same request made alone (or a bad one answered)."""
    bad = []
    for i, (request, reply, ref) in enumerate(zip(requests, replies, alone)):
        if isinstance(reply, dict) != request[2] or isinstance(ref, dict) != request[2]:
            bad.append(i)
        elif isinstance(reply, dict):
            if sorted(reply) != sorted(ref) or any(not np.array_equal(reply[k], ref[k])
                                                   for k in ref):
                bad.append(i)
        elif reply != ref:
            bad.append(i)
    return bad


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # the export's INFO lines
    threads = [int(t) for t in FLAGS.threads]
    source = sampling.from_family("ddim", num_steps=FLAGS.num_steps, stride="quadratic")
    with tempfile.TemporaryDirectory() as work:
        version = export.export_sampler(source.layer, os.path.join(work, "export"),
                                        max_num_samples=FLAGS.max_count)
        signatures = tf.saved_model.load(version).signatures
        total = FLAGS.requests * max(threads)
        requests = mixed_requests(np.random.default_rng(FLAGS.seed), total, FLAGS.num_steps,
                                  FLAGS.max_count, source.image_shape)
        for r in requests[:8]:  # warm-up: trace and compile every path once
            call(signatures, r)
        alone, _ = serve(signatures, requests, 1)
        print(f"DDIM K={FLAGS.num_steps} on the bundled digits model; {len(requests)} requests "
              f"per pass ({sum(not r[2] for r in requests)} bad); load average "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        print("| threads | requests | seconds | requests / s | vs 1 thread |")
        print("|---|---|---|---|---|")
        base = None
        for t in threads:
            n = FLAGS.requests * t
            replies, seconds = serve(signatures, requests[:n], t)
            wrong = mismatches(requests[:n], replies, alone[:n])
            if wrong:
                print(f"{len(wrong)} replies with {t} threads differ from the same requests made "
                      f"alone (first: {wrong[0]}, {requests[wrong[0]][0]})", file=sys.stderr)
                sys.exit(1)
            rate = n / seconds
            base = base or rate
            print(f"| {t} | {n} | {seconds:.2f} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    app.run(main)
