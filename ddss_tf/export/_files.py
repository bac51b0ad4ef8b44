"""Nothing half-written: files and directories appear complete or not at all.

Every writer puts its output in a temporary sibling (same directory, so the same
file system) and renames it into place; on any error the temporary is removed and
the destination is untouched.
"""

import contextlib
import io
import os
import shutil
import tempfile
import zipfile

import numpy as np

__all__ = ["atomic_file", "atomic_dir", "write_bytes", "npz_bytes", "TMP_PREFIX"]

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
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=TMP_PREFIX + os.path.basename(path) + ".")
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
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
    tmp = tempfile.mkdtemp(dir=parent, prefix=TMP_PREFIX)
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
