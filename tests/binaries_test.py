"""The absl binaries: bad flags give one line on stderr (no traceback) and a non-zero exit."""

import pytest

import testing


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
    proc = testing.run_binary(binary, *flags)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
