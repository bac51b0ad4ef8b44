"""The absl binaries: bad flags give one line on stderr (no traceback) and a non-zero exit."""

import os
import subprocess
import sys

import pytest

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(binary, *flags):
    env = dict(os.environ, PYTHONPATH=_ROOT)
    return subprocess.run([sys.executable, os.path.join(_ROOT, "bin", binary + ".py"), *flags],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("binary,flags,message", [
    ("ddss_train_model", ["--workdir=/tmp/x", "--ch_mult=1,x"], "--ch_mult must be a comma-separated"),
    ("ddss_train_model", ["--workdir=/tmp/x", "--batch_size=0"], "--batch_size"),
    ("ddss_train_model", ["--workdir=/tmp/x", "--schedule=sigmoid"], "cosine|linear_beta"),
    ("ddss_train_model", [], "--workdir"),
    ("ddss_train_model", ["--workdir=/tmp/x", "--dataset=mnist"], "accepted: digits"),
    ("ddss_train_classifier", ["--out_dir=/tmp/x", "--channels="], "--channels must be"),
    ("ddss_train_classifier", ["--out_dir=/tmp/x", "extra"], "unexpected arguments"),
])
def test_bad_flags_fail_with_one_clear_line(binary, flags, message):
    proc = _run(binary, *flags)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
