"""Resume from the newest checkpoint that reads back whole, and never lose one.

    manager = checkpoints.open_manager(ckpt, os.path.join(workdir, "checkpoints"), log=log)
    ... manager.save(checkpoint_number=step) ...

`tf.train.CheckpointManager` trusts its `checkpoint` index file and the files it names: a
garbage index file reads as "no checkpoint" (a run would start again from step 0 and
overwrite the good ones), and a truncated or corrupt newest checkpoint ends every rerun
in a traceback. `open_manager` looks at the files themselves instead:

1. every `ckpt-N` present, newest first, is read back tensor by tensor (the bundle format
   checks each tensor's CRC32C) and then restored into `ckpt`;
2. one that fails is reported in one line naming its files and moved into `damaged/`
   (kept for inspection, out of the manager's way), and the next older one is tried;
3. the index file is rewritten to list the readable checkpoints, so the manager keeps
   rotating them;
4. checkpoint files of which none reads back are an error, never "no checkpoint".
"""

import contextlib
import glob
import os
import re
import shutil

import tensorflow as tf

from ddss_tf import files

__all__ = ["open_manager", "save", "checkpoint_numbers", "verify", "DamagedCheckpoint",
           "DAMAGED_DIR"]

DAMAGED_DIR = "damaged"
_PREFIX = "ckpt"


class DamagedCheckpoint(ValueError):
    """A checkpoint whose files do not read back (truncated, corrupt, missing a part)."""


def checkpoint_numbers(directory):
    """The N of every ckpt-N in `directory` with an index file, descending."""
    numbers = []
    for path in glob.glob(os.path.join(glob.escape(directory), f"{_PREFIX}-*.index")):
        match = re.fullmatch(rf"{_PREFIX}-(\d+)\.index", os.path.basename(path))
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers, reverse=True)


def _files_of(prefix):
    return sorted(glob.glob(glob.escape(prefix) + ".*"))


def verify(prefix):
    """Read every tensor of the checkpoint `prefix`; DamagedCheckpoint naming its files if
    one does not read back."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception as e:  # noqa: BLE001  (the reader raises OpError, IndexError, ValueError...)
        msg = " ".join(str(getattr(e, "message", e)).split())[:200] or type(e).__name__
        names = ", ".join(_files_of(prefix)) or prefix
        raise DamagedCheckpoint(f"checkpoint {names} is damaged ({msg})") from None


def _set_aside(prefix, directory, log):
    target = os.path.join(directory, DAMAGED_DIR)
    os.makedirs(target, exist_ok=True)
    for path in _files_of(prefix):
        os.replace(path, os.path.join(target, os.path.basename(path)))
    log(f"moved the damaged checkpoint's files into {target}")


def _rewrite_index(directory, numbers):
    """Make the `checkpoint` index file list exactly the readable checkpoints (oldest first)."""
    prefixes = [os.path.join(directory, f"{_PREFIX}-{n}") for n in sorted(numbers)]
    state = _read_index(directory)
    have = list(state.all_model_checkpoint_paths) if state else None
    if not prefixes:
        if os.path.exists(os.path.join(directory, "checkpoint")):
            os.remove(os.path.join(directory, "checkpoint"))
    elif not (state and state.model_checkpoint_path == prefixes[-1] and have == prefixes):
        # The CheckpointState text proto CheckpointManager writes, with relative paths.
        # Timestamps (the index files' mtimes) let the manager rotate them as its own.
        names = [os.path.basename(p) for p in prefixes]
        stamps = [os.path.getmtime(p + ".index") for p in prefixes]
        text = (f'model_checkpoint_path: "{names[-1]}"\n'
                + "".join(f'all_model_checkpoint_paths: "{n}"\n' for n in names)
                + "".join(f"all_model_checkpoint_timestamps: {t!r}\n" for t in stamps)
                + f"last_preserved_timestamp: {min(stamps) - 1.0!r}\n")
        with files.atomic_file(os.path.join(directory, "checkpoint")) as f:
            f.write(text)


_INDEX_LINE = re.compile(r'(model_checkpoint_path|all_model_checkpoint_paths): ".*"|'
                         r'(all_model_checkpoint_timestamps|last_preserved_timestamp): [-+.\deE]+')


def _read_index(directory):
    """The index file's state, or None when it is missing or not a CheckpointState text
    proto (checked here first, so TensorFlow does not log a parse warning)."""
    path = os.path.join(directory, "checkpoint")
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or not all(_INDEX_LINE.fullmatch(line) for line in lines):
        return None
    try:
        return tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError):
        return None


def save(manager, number):
    """manager.save(checkpoint_number=number) that leaves nothing half-written when it fails (a
    full disk, a second signal): TensorFlow's `ckpt-N_temp` directory, the temporary index
    file, and the data files of a ckpt-N whose index was never written. An older ckpt-N that
    a resumed run saves again is kept as it was until the new one replaces it."""
    prefix = os.path.join(manager.directory, f"{_PREFIX}-{number}")
    try:
        return manager.save(checkpoint_number=number)
    except BaseException:
        shutil.rmtree(prefix + "_temp", ignore_errors=True)
        leftovers = glob.glob(os.path.join(glob.escape(manager.directory), "checkpoint.tmp*"))
        if not os.path.exists(prefix + ".index"):
            leftovers += _files_of(prefix)
        for path in leftovers:
            with contextlib.suppress(OSError):
                os.remove(path)
        raise


def open_manager(ckpt, directory, max_to_keep=3, log=print, restore_from=None):
    """(tf.train.CheckpointManager over `directory`, restored checkpoint prefix or None).

    Restores `ckpt` from the newest readable checkpoint in `restore_from` (default:
    `directory`), setting damaged ones aside with a message; writes go to `directory`.
    Raises DamagedCheckpoint when checkpoints exist but none reads back, and ValueError
    when the newest readable one does not fit `ckpt` (another run's checkpoints).
    """
    source = restore_from or directory
    restored = None
    numbers = checkpoint_numbers(source) if os.path.isdir(source) else []
    if numbers and _read_index(source) is None and os.path.exists(
            os.path.join(source, "checkpoint")):
        log(f"the index file {os.path.join(source, 'checkpoint')} is unreadable; rebuilding it "
            "from the checkpoint files present")
    readable, damaged = list(numbers), []
    for n in numbers:
        prefix = os.path.join(source, f"{_PREFIX}-{n}")
        try:
            verify(prefix)
        except DamagedCheckpoint as e:
            log(f"{e}; trying the previous one")
            readable.remove(n)
            damaged.append(prefix)
            continue
        try:
            ckpt.restore(prefix).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as e:
            msg = " ".join(str(e).split())[:300]
            raise ValueError(f"checkpoint {prefix} does not fit this run ({msg}); it belongs to "
                             "another run: use a new work directory") from None
        restored = prefix
        break
    if numbers and restored is None:
        raise DamagedCheckpoint(
            f"none of the checkpoints in {source} reads back (damaged: "
            f"{', '.join(f'{_PREFIX}-{n}' for n in numbers)}); nothing was overwritten. Restore "
            "them from a backup, or move them away to start the run again from step 0")
    if source == directory and os.path.isdir(directory):
        for prefix in damaged:  # only once a readable one is restored: out of the way, kept
            _set_aside(prefix, directory, log)
        _rewrite_index(directory, readable)
    manager = tf.train.CheckpointManager(ckpt, directory, max_to_keep=max_to_keep)
    if restored and source == directory and manager.latest_checkpoint != restored:
        raise DamagedCheckpoint(f"the index file in {directory} could not be rebuilt to name "
                                f"{restored}")
    return manager, restored
