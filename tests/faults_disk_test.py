"""A full disk and files that are not what their names say (README: "Exit codes and faults").

A full disk (ENOSPC, or EDQUOT over a quota) anywhere is one line naming the path being written,
exit 2, and leaves nothing half-written; here on small tmpfs mounts with the real binaries
(root: mount; elsewhere those tests are skipped, the mapping's unit tests still run), and as
the errors each writer raises (OSError, h5py's OSError without errno, TensorFlow's
ResourceExhaustedError).
"""

import contextlib
import errno
import glob
import os
import subprocess
import zipfile

import numpy as np
import pytest
import tensorflow as tf

import testing
from search_helpers import toy_model
from ddss_tf import cli, data_sources, files, images, metrics, models
from ddss_tf.evaluation import scoring


# ---- the mapping -----------------------------------------------------------------------------

@pytest.mark.parametrize("error,path", [
    (OSError(errno.ENOSPC, "No space left on device", "/d/w/results.json"), "/d/w/results.json"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/d/w/.tmp-ab12/x.pb"), "/d/w/x.pb"),
    (tf.errors.ResourceExhaustedError(None, None, (
        "{{function_node __wrapped__SaveV2}} /d/w/checkpoints/ckpt-3_temp/part-00000-of-00001"
        ".data-00000-of-00001.tempstate1348292; No space left on device [Op:SaveV2]")),
     "/d/w/checkpoints/ckpt-3_temp/part-00000-of-00001.data-00000-of-00001"),
    (OSError("Unable to synchronously create file (unable to open file: name = "
             "'/d/m/model.weights.h5', errno = 28, error message = 'No space left on device')"),
     "/d/m/model.weights.h5"),
])
def test_a_full_disk_is_exit_2_naming_the_path_never_out_of_memory(error, path):
    code, message = cli._exit_code(error)
    assert code == 2
    assert message.startswith(f"the disk is full (or over quota) writing {path}: "), message
    assert "memory" not in message and "batch_size" not in message
    try:  # raised from another error: still the disk
        raise ValueError("could not save") from error
    except ValueError as wrapped:
        assert cli._exit_code(wrapped) == (code, message)


def test_running_out_of_memory_is_still_out_of_memory():
    code, message = cli._exit_code(tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[4096,4096,64]"))
    assert code == 2 and message.startswith("out of memory") and "--batch_size" in message


def test_a_write_that_fails_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    path = str(tmp_path / "a.json")
    with pytest.raises(OSError) as e:
        files.write_json(path, {"a": 1})
    assert e.value.errno == errno.ENOSPC and e.value.filename == path
    assert os.listdir(tmp_path) == []


# ---- on small disks, with the real binaries --------------------------------------------------

@contextlib.contextmanager
def _small_disk(path, size):
    """A tmpfs of `size` mounted on `path` (a new directory); `remount(size)` resizes it."""
    os.makedirs(path)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (root only): {proc.stderr.strip()}")

    def remount(new_size):
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(path)], check=True)

    try:
        yield remount
    finally:
        subprocess.run(["umount", str(path)], check=True)


def _leftovers(directory):
    return [p for p in glob.glob(os.path.join(str(directory), "**"), recursive=True)
            if os.path.basename(p).startswith(files.TMP_PREFIX) or p.endswith("_temp")
            or ".tempstate" in p or ".tmp" in os.path.basename(p)]


def _disk_full_line(proc, under):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert f"the disk is full (or over quota) writing {under}/" in lines[0], lines[0]
    return lines[0]


def test_a_search_on_a_full_disk_stops_cleanly_and_resumes_once_there_is_space(tmp_path):
    disk = tmp_path / "disk"
    flags = [f"--model={toy_model()}", "--schedule=linear_beta", "--num_steps=2",
             "--batch_size=8", "--noxla", "--eval_every=1000", "--eval_samples=16", "--validation_samples=16",
             "--final_samples=16", "--reference_steps=10", "--train_steps=2",
             f"--workdir={disk}/run"]
    with _small_disk(disk, "200k") as remount:  # room for the checkpoints, not the export
        proc = testing.run_binary("ddss_search", *flags, env=testing.binary_env(tmp_path))
        _disk_full_line(proc, disk)
        assert not _leftovers(disk), _leftovers(disk)
        assert not os.path.exists(disk / "run" / "results.json")
        remount("8m")
        proc = testing.run_binary("ddss_search", *flags, env=testing.binary_env(tmp_path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert os.path.exists(disk / "run" / "results.json") and not _leftovers(disk)


def test_samples_and_caches_on_a_full_disk_are_one_line_and_leave_nothing(tmp_path):
    with _small_disk(tmp_path / "disk", "8k"):
        out = tmp_path / "disk" / "s.npz"
        proc = testing.run_binary("ddss_sample", "--family=ddim", "--num_steps=2",
                                  "--num_samples=64", f"--out={out}",
                                  env=testing.binary_env(tmp_path))
        _disk_full_line(proc, tmp_path / "disk")
        assert os.listdir(tmp_path / "disk") == []
    cache = tmp_path / "cache"
    with _small_disk(cache, "64k"):  # the reference statistics of the digits do not fit
        proc = testing.run_binary("ddss_search", f"--model={toy_model()}",
                                  "--schedule=linear_beta", "--num_steps=2", "--batch_size=8",
                                  "--train_steps=1", f"--workdir={tmp_path}/run",
                                  env=testing.binary_env(tmp_path, DDSS_TF_CACHE=str(cache)))
        _disk_full_line(proc, cache)
        assert not _leftovers(cache), _leftovers(cache)


# ---- files that are not what their names say -------------------------------------------------

def test_a_text_file_named_keras_is_named_as_not_a_keras_file(tmp_path):
    for name in ("m.keras", "m.h5"):
        path = tmp_path / name
        path.write_text("hello\n")
        with pytest.raises(ValueError) as e:
            models.load(str(path), schedule="linear_beta")
        msg = str(e.value)
        assert f"{path} is not a Keras model file (a file starting with b'hello\\n')" in msg, msg
        assert ("zip archive" if name.endswith(".keras") else "HDF5 file") in msg
        assert "File not found" not in msg


def test_an_npz_that_is_not_an_archive_of_arrays_never_suggests_unpickling(tmp_path):
    text = tmp_path / "data.npz"
    text.write_text("hello\n")
    objects = tmp_path / "objects.npz"
    np.savez(objects, images=np.array([{"a": 1}, None], dtype=object))
    for path, phrase in [(text, "is not a NumPy .npz archive (a zip of .npy arrays"),
                         (objects, "'images' of {} is an array of Python objects, which is "
                                   "never loaded")]:
        with pytest.raises(ValueError) as e:
            data_sources.load(str(path))
        msg = str(e.value)
        assert phrase.format(path) in msg, msg
        assert "accepted: an .npz of images [N, H, W, C]" in msg
        assert "pickle" not in msg.lower(), msg
    assert zipfile.is_zipfile(objects)


def test_a_folder_with_one_image_says_how_many_it_holds(tmp_path):
    folder = tmp_path / "one"
    (folder / "train").mkdir(parents=True)
    images.write_png(str(folder / "train" / "a.png"), np.zeros([8, 8, 1], np.uint8))
    with pytest.raises(ValueError) as e:
        metrics.reference_statistics(scoring.load_extractor("pixels"), str(folder), "train",
                                     cache_dir=str(tmp_path / "cache"))
    msg = str(e.value)
    assert f"the data set {folder} (split 'train') holds 1 image(s)" in msg, msg
    assert "at least 2" in msg and "[2, 1]" not in msg
