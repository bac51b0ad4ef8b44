"""The files ddss_tf writes and reads: never half-written, never silently broken.

- Atomic writers: every writer puts its output in a temporary sibling (same directory,
  so the same file system) and renames it into place; on any error (a full disk) or a
  signal (interrupt.Signalled) the temporary is removed and the destination is untouched.
- Strict JSON: `write_json` refuses NaN / Infinity (naming the key) instead of writing
  what most parsers reject; `read_json` rejects them too and names the file of any
  damage.
- Work directories: `writable_dir` checks a directory can be written before any work
  starts; `WorkdirLock` keeps a second run out of a directory while the first runs.
"""

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import uuid
import zipfile

import numpy as np

__all__ = ["atomic_file", "atomic_dir", "atomic_path", "write_bytes", "npz_bytes", "TMP_PREFIX",
           "write_json", "read_json", "dumps_json", "non_finite_path", "writable_dir",
           "WorkdirLock", "WorkdirBusy", "weights_digest"]

# TF Serving only looks at directories whose names are integers, and our own
# version scan skips this prefix, so an interrupted export is never picked up.
TMP_PREFIX = ".tmp-"


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path, mode="w"):
    """Open a temporary file beside `path`; on success rename it to `path`."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=TMP_PREFIX + os.path.basename(path) + ".")
    except OSError as e:  # name the file the caller asked for, not the temporary
        raise type(e)(e.errno, e.strerror, path) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; give the usual file mode
        with _naming(path), os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def _naming(path):
    """An OSError without a file name (a write or fsync on a full disk) re-raised naming `path`,
    the file the caller asked for."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise type(e)(e.errno, e.strerror, path) from e


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` ending like it (a writer that takes a file name,
    such as Keras' save_weights, needs the suffix); on success rename it to `path`, on any
    error (a full disk, a signal) remove it and leave `path` untouched."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}")
    try:
        with _naming(path):
            yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_bytes(path, data):
    """Write `data` (bytes) to `path` atomically."""
    with atomic_file(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_dir(parent, name_fn):
    """Yield a fresh temporary directory inside `parent`; on success rename it.

    name_fn() -> the final name, asked right before the rename (so a version
    number can be taken as late as possible); if another writer took that name in
    the meantime, name_fn is asked again (up to 5 times). The final path is stored
    in the yielded holder's `path` attribute after the block.
    """
    os.makedirs(parent, exist_ok=True)
    try:
        tmp = tempfile.mkdtemp(dir=parent, prefix=TMP_PREFIX)
    except OSError as e:
        raise type(e)(e.errno, e.strerror, parent) from None
    holder = _Holder(tmp)
    try:
        os.chmod(tmp, 0o777 & ~_umask())   # mkdtemp makes 0700: a server user could not read it
        yield holder
        for _ in range(5):
            final = os.path.join(parent, name_fn())
            try:
                os.rename(tmp, final)   # fails if `final` exists and is not empty
            except OSError:
                if not os.path.exists(final):
                    raise
                continue
            holder.path = final
            return
        raise FileExistsError(f"could not claim a new directory name in {parent}")
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


class _Holder:
    def __init__(self, tmp):
        self.tmp = tmp
        self.path = None


def npz_bytes(arrays):
    """An uncompressed .npz (what np.load reads) with fixed timestamps: same arrays, same bytes.

    np.savez stamps each member with the current time, so two runs differ.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def non_finite_path(value, path=""):
    """(key path such as "records[3].fid", the number) of the first non-finite float in a
    JSON-like value, or None when every number is finite."""
    if isinstance(value, dict):
        items = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        number = isinstance(value, (float, np.floating)) and not math.isfinite(value)
        return (path or "the value", value) if number else None
    for key, v in items:
        found = non_finite_path(v, key)
        if found:
            return found
    return None


def dumps_json(value, what="the value", indent=2, sort_keys=True):
    """json.dumps that refuses non-finite numbers with FloatingPointError naming the key."""
    bad = non_finite_path(value)
    if bad:
        raise FloatingPointError(f"refusing to write {what}: {bad[0]} is not finite ({bad[1]})")
    return json.dumps(value, indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(path, value, indent=2, sort_keys=True):
    """Write strict JSON to path atomically; FloatingPointError (nothing written) if any
    number is NaN or infinite."""
    text = dumps_json(value, path, indent, sort_keys)
    with atomic_file(path) as f:
        f.write(text)


def _refusing(path):
    """(parse_constant, parse_float) for json.loads that refuse NaN, Infinity and numbers
    that overflow to infinity (1e999)."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}, not a finite number; JSON written by ddss_tf "
                         "never does: the file is damaged or was edited")

    def parse_float(text):
        value = float(text)
        if not math.isfinite(value):
            refuse(text)
        return value

    return refuse, parse_float


def read_json(path, what="file", expect=None):
    """json.load that names the file in every error: a missing or unreadable file, invalid
    or truncated JSON, NaN / Infinity, or (with `expect`, e.g. dict) another kind of value
    at the top (ValueError; OSError for the file system)."""
    with open(path) as f:
        text = f.read()
    refuse, parse_float = _refusing(path)
    try:
        value = json.loads(text, parse_constant=refuse, parse_float=parse_float)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not a valid JSON {what} ({e.msg} at line {e.lineno} "
                         f"column {e.colno}); the file is damaged or truncated") from None
    if expect is not None and not isinstance(value, expect):
        raise ValueError(f"{path} is not a {what}: it holds a JSON {type(value).__name__}, "
                         f"not a {expect.__name__}")
    return value


def writable_dir(path, what="directory"):
    """Create `path` if needed and check a file can be written in it, before any work.

    Raises OSError naming the path and why (a file in the way, no permission, a read-only
    file system), so a run fails at once rather than after hours of work."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, f"{what} is a file, not a directory", path)
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=TMP_PREFIX + "probe.")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise type(e)(e.errno, f"{what} is not writable ({e.strerror})", path) from None
    return path


class WorkdirBusy(ValueError):
    """Another process holds the work directory's lock."""


class WorkdirLock:
    """An exclusive lock on a work directory (an flock on <dir>/.lock) while a run writes it.

    The lock belongs to the open file, so the kernel drops it when its process dies: a
    killed run leaves no stale lock. The file records the holder's pid and host for the
    message a second run gets. (flock is advisory and local to one machine's kernel; on
    some network file systems it does not reach other hosts.)
    """

    NAME = ".lock"

    def __init__(self, directory):
        self.path = os.path.join(directory, self.NAME)
        self._file = None

    def __enter__(self):
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise WorkdirBusy(f"{os.path.dirname(self.path)} is in use by {holder}; wait for it "
                              "to finish (or stop it) or use another --workdir") from None
        with _naming(self.path):  # a full disk: name the lock file
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
            f.flush()
        self._file = f
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        return False


def weights_digest(weights):
    """Short sha1 digest of a list of weight arrays (shapes, dtypes and bytes): what the model
    fingerprint and a feature network's records hold of its weights."""
    digest = hashlib.sha1()
    for w in weights:
        arr = np.ascontiguousarray(w)
        digest.update(str((arr.shape, arr.dtype.str)).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()[:16]
