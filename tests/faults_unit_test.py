"""The fault handling that needs no subprocess (the fast tier): damaged checkpoints, strict JSON,
broken coefficients files, the progress bar's first step and labelled compare rows.
tests/faults_test.py runs the binaries against the same faults."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import export_helpers
from ddss_tf import checkpoints, files, images, progress, sampling
from ddss_tf import evaluation


def _toy_checkpoint(directory, steps=(1, 2, 3)):
    step = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(step=step, w=tf.Variable(tf.zeros([64])))
    manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep=5)
    for s in steps:
        step.assign(s)
        manager.save(checkpoint_number=s)
    return ckpt, step


@pytest.mark.parametrize("damage", ["truncated data", "emptied index", "flipped data byte",
                                    "missing data"])
def test_each_kind_of_damage_is_detected_and_the_previous_checkpoint_restored(tmp_path, damage):
    directory = str(tmp_path / "ckpts")
    _toy_checkpoint(directory)
    prefix = os.path.join(directory, "ckpt-3")
    data, index = prefix + ".data-00000-of-00001", prefix + ".index"
    if damage == "truncated data":
        os.truncate(data, os.path.getsize(data) // 2)
    elif damage == "emptied index":
        open(index, "w").close()
    elif damage == "flipped data byte":
        with open(data, "r+b") as f:
            f.seek(os.path.getsize(data) - 4)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:
        os.remove(data)
    with pytest.raises(checkpoints.DamagedCheckpoint, match="ckpt-3"):
        checkpoints.verify(prefix)
    logged = []
    ckpt, step = _toy_checkpoint(str(tmp_path / "fresh"), steps=())
    manager, restored = checkpoints.open_manager(ckpt, directory, log=logged.append)
    assert restored == os.path.join(directory, "ckpt-2") and int(step) == 2
    assert any("ckpt-3" in line and "is damaged" in line for line in logged)
    assert manager.latest_checkpoint == restored
    assert checkpoints.checkpoint_numbers(directory) == [2, 1]  # ckpt-3 set aside, kept


def test_a_garbage_index_file_is_rebuilt_not_read_as_no_checkpoint(tmp_path):
    directory = str(tmp_path / "ckpts")
    _toy_checkpoint(directory)
    with open(os.path.join(directory, "checkpoint"), "w") as f:
        f.write("\x00\x01 not a checkpoint state\n")
    ckpt, step = _toy_checkpoint(str(tmp_path / "fresh"), steps=())
    logged = []
    manager, restored = checkpoints.open_manager(ckpt, directory, log=logged.append)
    assert int(step) == 3 and restored.endswith("ckpt-3")
    assert any("unreadable; rebuilding it" in line for line in logged)
    assert tf.train.latest_checkpoint(directory) == restored
    # The manager owns them again: it rotates the rebuilt ones out.
    manager2 = tf.train.CheckpointManager(ckpt, directory, max_to_keep=2)
    step.assign(4)
    manager2.save(checkpoint_number=4)
    assert checkpoints.checkpoint_numbers(directory) == [4, 3]


@pytest.fixture(scope="module")
def coefficients_doc():
    return export_helpers.digits_coefficients_document()


@pytest.mark.parametrize("edit,phrase", [
    (lambda d: d["variables"].__setitem__(next(iter(d["variables"])), float("inf")), "Infinity"),
    (lambda d: d.__setitem__("model", None), '"model" is NoneType, not dict'),
    (lambda d: d["layer_config"].__setitem__("dtype", {"x": 1}), "layer_config is invalid"),
    (lambda d: d["variables"].__setitem__(
        [k for k in d["variables"] if "time" in k][0], [float("nan")] * 2), "NaN"),
])
def test_a_broken_coefficients_file_is_refused_naming_it(tmp_path, coefficients_doc, edit, phrase):
    doc = json.loads(json.dumps(coefficients_doc))
    edit(doc)
    path = str(tmp_path / "coefficients.json")
    with open(path, "w") as f:
        json.dump(doc, f)  # what a hand edit or another writer may leave: Infinity, NaN
    with pytest.raises(ValueError, match=phrase) as e:
        sampling.from_coefficients(path)
    assert path in str(e.value)


def test_json_is_strict_both_ways(tmp_path):
    path = str(tmp_path / "r.json")
    with pytest.raises(FloatingPointError, match=r"records\[1\]\.fid is not finite \(nan\)"):
        files.write_json(path, {"records": [{"fid": 1.0}, {"fid": float("nan")}]})
    assert not os.path.exists(path)
    files.write_json(path, {"kid_se": None, "fid": 2.5})
    with open(path) as f:
        assert json.loads(f.read()) == {"fid": 2.5, "kid_se": None}
    for text, phrase in [('{"fid": NaN}', "holds NaN"), ('{"fid": -Infinity}', "-Infinity"),
                         ('{"fid": 1.0', "damaged or truncated")]:
        with open(path, "w") as f:
            f.write(text)
        with pytest.raises(ValueError, match=phrase) as e:
            files.read_json(path)
        assert path in str(e.value)
    # A damaged cache is named and recomputed, never a traceback.
    logged = []
    assert evaluation.read_cache(path, logged.append) is None
    assert path in logged[0] and "recomputing" in logged[0]
    with pytest.raises(FloatingPointError, match="DDIM: fid not finite"):
        evaluation.checked_scores(dict(fid=float("nan"), kid=0.1, kid_se=0.01, heldout_fid=1.0),
                              "DDIM")
    assert evaluation.checked_scores(dict(fid=1.0, kid=0.1, kid_se=float("nan"), heldout_fid=1.0),
                                 "x")["kid_se"] is None


def test_progress_eta_leaves_out_the_compiling_first_step(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])

    class Stream(list):
        def write(self, text):
            self.append(text)

        def flush(self):
            pass

    stream = Stream()
    bar = progress.Progress(100, desc="search", stream=stream, log_every_seconds=0,
                            first="compiling")
    assert "compiling" in stream[-1] and "search 0/100" in stream[-1]
    clock[0] = 600.0  # ten minutes of XLA compilation
    bar.update(1)
    assert "ETA ?" in stream[-1]
    clock[0] = 601.0
    bar.update(2)  # one second per step from here on: 98 steps left
    assert "1.00 steps/s" in stream[-1] and "ETA 1m38s" in stream[-1], stream[-1]


def test_compare_rows_carry_their_labels():
    # "I" in the 5 x 7 font, drawn by hand.
    want = np.array([[0, 1, 1, 1, 0, 0]] + [[0, 0, 1, 0, 0, 0]] * 5 + [[0, 1, 1, 1, 0, 0]], bool)
    np.testing.assert_array_equal(images.render_text("i"), want)
    np.testing.assert_array_equal(images.render_text("I", scale=2), want.repeat(2, 0).repeat(2, 1))
    rows = [np.ones([12, 8, 8, 1], np.float32)] * 2  # white images
    plain = images.labelled_rows(rows, ncols=12)
    labelled = images.labelled_rows(rows, ncols=12, labels=["DDIM", "DDSS GGDM +PRED"])
    width = labelled.shape[1] - plain.shape[1]
    assert width > 0 and labelled.shape[0] == plain.shape[0]
    np.testing.assert_array_equal(labelled[:, width:], plain)
    band = plain.shape[0] // 2
    ink = (labelled[:, :width, 0] == 0).sum(axis=1)
    assert ink[:band].sum() > 0 and ink[band:].sum() > ink[:band].sum()  # the longer label
    with pytest.raises(ValueError, match="3 labels for 2 rows"):
        images.labelled_rows(rows, ncols=12, labels=["a", "b", "c"])


# ---- a work directory whose config.json cannot be used ----------------------------------------

def test_an_unusable_config_json_starts_over_without_checkpoints_and_says_how_with_them(tmp_path):
    from ddss_tf.search import SearchConfig, workdir as workdir_lib

    cfg = SearchConfig(num_steps=3)
    path = tmp_path / "config.json"
    path.write_text('{"learning_rate": NaN}')  # what an old NaN flag left behind
    said = []
    workdir_lib.check_saved_config(str(tmp_path), cfg, said.append)  # nothing to lose: go on
    assert "starts over" in said[0] and "config.json" in said[0]
    _toy_checkpoint(str(tmp_path / "checkpoints"), steps=(1,))
    with pytest.raises(ValueError, match=r"NaN.*restore .*config.json, or move .* away"):
        workdir_lib.check_saved_config(str(tmp_path), cfg, said.append)
    workdir_lib.write_config(str(tmp_path), cfg)  # a valid one resumes as before
    workdir_lib.check_saved_config(str(tmp_path), cfg, said.append)


def test_results_json_records_the_export_relative_to_its_work_directory(tmp_path):
    from ddss_tf.search import SearchConfig, workdir as workdir_lib

    config = json.loads(SearchConfig().to_json())
    for recorded in ("export/3", "/elsewhere/run/export/3"):  # now, and as files before held it
        files.write_json(str(tmp_path / "results.json"), dict(config=config, export=recorded))
        assert workdir_lib.read_results(str(tmp_path))["export"] == str(tmp_path / "export" / "3")
