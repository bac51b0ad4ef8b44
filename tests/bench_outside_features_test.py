"""tools/bench_outside_features.py: its Frechet distance against scipy's, and its table against
samples drawn here through the public sampling API."""

import importlib.util
import os

import numpy as np
import pytest
import scipy.linalg

import testing
from ddss_tf import sampling


def _load_binary():
    path = os.path.join(testing.ROOT, "tools", "bench_outside_features.py")
    spec = importlib.util.spec_from_file_location("bench_outside_features", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_binary()


def _scipy_frechet(a, b):
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * root))


def test_frechet_distance_equals_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + 0.3
    np.testing.assert_allclose(bench.frechet_distance(a, b), _scipy_frechet(a, b), rtol=1e-9)
    assert abs(bench.frechet_distance(a, a)) < 1e-9


def test_frechet_distance_with_a_constant_feature_is_that_of_the_others():
    # A feature that is 0 in both sets (the digits' border pixels) adds nothing; scipy's sqrtm
    # of the singular product is what the binary avoids.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 4)), 0.5 * rng.normal(size=(300, 4)) + 0.1
    zero = np.zeros((300, 1))
    np.testing.assert_allclose(bench.frechet_distance(np.hstack([a, zero]), np.hstack([b, zero])),
                               _scipy_frechet(a, b), rtol=1e-9)


def test_table_rows_equal_samples_scored_here(tmp_path):
    n, seed = 40, 1234
    proc = testing.run_tool("bench_outside_features", "--num_steps=2", f"--num_samples={n}",
                              f"--seed={seed}", "--baselines=ddim,unipc:quadratic",
                              env=testing.binary_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split(" | ")[0].strip("| "): line for line in proc.stdout.splitlines()
            if line.startswith("| ") and " | 2 | " in line}
    assert set(rows) == {"ddim", "unipc quadratic"}, proc.stdout
    spaces = bench.OutsideSpaces()
    ref = spaces.features(spaces.real)
    images, _ = sampling.draw(sampling.from_family("ddim", num_steps=2), n, seed=seed)
    got = [float(v) for v in rows["ddim"].strip("| ").split(" | ")[2:]]
    mine = spaces.features(images)
    # 40 samples give singular covariances in every space: the distance checked against scipy
    # above, the drawing and the table's wiring here.
    want = [bench.frechet_distance(mine[s], ref[s]) for s in bench.SPACES]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    assert got[0] > 0


@pytest.mark.parametrize("flags,message", [
    (["--num_steps=2", "--coefficients=c.json"],
     "--coefficients (K from each file) or --num_steps, not both"),
    ([], "nothing to score: give --coefficients or --num_steps"),
    (["--num_steps=2,x"], "--num_steps must be integers"),
])
def test_bad_flags_fail_with_one_line(flags, message):
    proc = testing.run_tool("bench_outside_features", *flags)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert message in proc.stderr
