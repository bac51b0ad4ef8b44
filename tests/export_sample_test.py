"""ddss_sample: same seed -> same bytes, the same images from an export, a coefficients.json and
the in-memory layer; bad flags and a mismatched model -> one line on stderr."""

import os

import numpy as np
import pytest

import export_helpers as helpers
import testing
from ddss_tf import noise, sampling


def _sample(*flags):
    return testing.run_binary("ddss_sample", *flags, env=helpers.quiet_env())


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_same_seed_same_bytes_from_export_json_and_memory():
    e = helpers.exported()
    common = ["--num_samples=5", "--batch_size=3", "--seed=4"]
    outs = {name: os.path.join(e.work, f"{name}.npz") for name in ("export", "again", "json")}
    runs = [_sample(f"--sampler={e.base}", f"--out={outs['export']}", *common),
            _sample(f"--sampler={e.version_dir}", f"--out={outs['again']}", *common),
            _sample(f"--coefficients={e.coefficients}", f"--model={e.model_dir}",
                    f"--out={outs['json']}", *common)]
    for proc in runs:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "sample 5/5" in proc.stderr                      # the progress bar
    for ext in (".npz", ".png"):
        first = _read(outs["export"][:-4] + ext)
        assert _read(outs["again"][:-4] + ext) == first
        assert _read(outs["json"][:-4] + ext) == first
    # Batches [3, 2] with seeds 4 + 0, 4 + 1 (noise.draw_batch), as the in-memory layer draws them.
    want = [helpers.reference_images(e.layer, noise.seed_pair(4 + b), n)
            for b, n in enumerate((3, 2))]
    got = np.load(outs["export"])["images"]
    assert got.dtype == np.float32 and got.shape == (5, 8, 8, 1)
    np.testing.assert_allclose(got, np.concatenate([w[0] for w in want]), rtol=0, atol=1e-6)


def test_a_family_by_name_on_a_given_model(tmp_path):
    e = helpers.exported()
    out = str(tmp_path / "ddim.npz")
    proc = _sample("--family=ddim", "--num_steps=2", "--stride=linear", "--eta=0.5",
                   f"--model={e.model_dir}", "--num_samples=3", f"--out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    images = np.load(out)["images"]
    assert images.shape == (3, 8, 8, 1) and np.all(np.abs(images) <= 1)
    assert _read(out[:-4] + ".png")[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("flags,message", [
    ([], "give exactly one of --sampler"),
    (["--family=ddim", "--sampler=/tmp/x"], "got --sampler, --family"),
    (["--sampler={base}", "--num_steps=4"], "--num_steps do not apply with --sampler"),
    (["--family=ddim", "--out=/tmp/x.png"], "--out must name a .npz"),
    (["--sampler=/nonexistent/export"], "exported sampler /nonexistent/export does not exist"),
    (["--sampler={base}", "--batch_size=9"], "exceeds the export's max_num_samples 8"),
    (["--coefficients={coefficients}"], "does not match the model: weights fingerprint"),
])
def test_bad_flags_fail_with_one_clear_line(flags, message):
    e = helpers.exported()
    proc = _sample(*(f.format(base=e.base, coefficients=e.coefficients) for f in flags))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr, proc.stderr[-2000:]


def test_draw_checks_its_arguments():
    e = helpers.exported()
    source = sampling.LayerSource(e.layer)
    for kwargs, match in [(dict(num_samples=0), "num_samples"), (dict(seed=-1), "seed"),
                          (dict(seed=2 ** 63), "seed"),
                          (dict(seed=2 ** 63 - 1, num_samples=3, batch_size=1), "seed"), (dict(batch_size=1.5), "batch_size")]:
        with pytest.raises(ValueError, match=match):
            sampling.draw(source, **dict(dict(num_samples=2), **kwargs))
    with pytest.raises(ValueError, match=".npz"):
        sampling.write("samples.png", np.zeros([1, 8, 8, 1]), np.zeros([1, 8, 8, 1], np.uint8))
