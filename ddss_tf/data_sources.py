"""Data sets from outside the package: tensorflow-datasets names, image folders and .npz files.

    images, labels = data_sources.load("cifar10", "train", image_shape=(32, 32, 3))

Each source gives float32 images [N, H, W, C] in the data range [-1, 1] (labels
int64 [N] or None):

  tfds name     "cifar10", "cifar10:3.0.2", ...: the "image" feature (uint8, 0..255) of
                a split tfds accepts ("train", "test", "train[:10%]"), with its "label"
                when there is one. Needs tensorflow-datasets (the `tfds` extra, imported
                only here) and a copy already prepared in its data_dir: nothing is
                downloaded at run time.
  image folder  every .png / .jpg / .jpeg below it, in sorted path order, 0..255. The
                split is the subfolder of that name when there is one, else "train" /
                "all" mean every image.
  .npz file     the array "images", "x" or the file's only array, [N, H, W, C] or
                [N, H, W]; integers are 0..255, floats must already lie in [-1, 1] (what
                `ddss_sample` writes). One split: "train" / "all".

With `image_shape` = (H, W, C) every image is fitted to it (`fit`).
"""

import os
import zipfile

import numpy as np
import tensorflow as tf

__all__ = ["load", "fit", "from_uint8", "IMAGE_SUFFIXES", "NPZ_KEYS"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
NPZ_KEYS = ("images", "x")
_WHOLE = ("train", "all")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 luma
_CHUNK = 1024
_ACCEPTED = ("digits, a folder of PNG/JPEG images, an .npz file, or a prepared "
             "tensorflow-datasets name (e.g. cifar10)")
_NPZ_ACCEPTED = ("accepted: an .npz of images [N, H, W, C] or [N, H, W], uint8 0..255 or float "
                 "in [-1, 1], as np.savez('data.npz', images=images) writes")


def from_uint8(images):
    """uint8-valued images (0..255) -> float32 in [-1, 1]: x / 127.5 - 1."""
    return np.asarray(images, np.float32) / np.float32(127.5) - np.float32(1.0)


def _channels(x, c):
    have = x.shape[-1]
    if have in (2, 4):  # drop alpha
        x, have = x[..., :have - 1], have - 1
    if have == c:
        return x
    if have == 1 and c == 3:
        return np.repeat(x, 3, axis=-1)
    if have == 3 and c == 1:
        return np.tensordot(x, _LUMA, axes=[[-1], [0]])[..., None].astype(np.float32)
    raise ValueError(f"cannot turn images with {x.shape[-1]} channels into {c}")


def fit(images, image_shape):
    """float images [N, H, W, C] -> float32 [N, h, w, c] for image_shape (h, w, c).

    Channels first (an alpha channel is dropped, grey is repeated to RGB, RGB becomes
    grey by BT.601 luma), then the largest centred crop with the target's aspect ratio,
    then tf.image.resize: "area" (the mean over each output pixel's footprint) when
    shrinking both sides, "bilinear" otherwise.
    """
    h, w, c = (int(d) for d in image_shape)
    x = _channels(np.asarray(images, np.float32), c)
    height, width = x.shape[1:3]
    if height * w > width * h:
        keep = int(width * h / w + 0.5)
        top = (height - keep) // 2
        x = x[:, top:top + keep]
    elif height * w < width * h:
        keep = int(height * w / h + 0.5)
        left = (width - keep) // 2
        x = x[:, :, left:left + keep]
    if x.shape[1:3] != (h, w):
        method = "area" if x.shape[1] >= h and x.shape[2] >= w else "bilinear"
        x = np.concatenate([tf.image.resize(x[i:i + _CHUNK], [h, w], method=method).numpy()
                            for i in range(0, len(x), _CHUNK)])
    return np.ascontiguousarray(x, np.float32)


def _stack(arrays, image_shape, where):
    """uint8 [H, W, C] arrays (any sizes) -> float32 [N, ...] fitted to image_shape."""
    if not arrays:
        raise ValueError(f"{where} holds no images")
    if image_shape is None:
        shapes = sorted({a.shape for a in arrays})
        if len(shapes) > 1:
            raise ValueError(f"the images of {where} differ in shape ({shapes[0]}, {shapes[1]}, "
                             "...); give the model's image shape to fit them")
        return from_uint8(np.stack(arrays))
    out, start = [], 0
    while start < len(arrays):  # runs of equal shape are fitted as one batch
        end = start + 1
        while end < len(arrays) and arrays[end].shape == arrays[start].shape:
            end += 1
        out.append(fit(from_uint8(np.stack(arrays[start:end])), image_shape))
        start = end
    return np.concatenate(out)


def _folder(path, split, image_shape):
    parts = split.replace("\\", "/").split("/")
    if os.path.isabs(split) or ".." in parts or not split.strip("/."):
        raise ValueError(f"split {split!r} must name a subfolder inside the image folder {path} "
                         "(no absolute path, no '..')")
    root = os.path.join(path, split)
    if not os.path.isdir(root):
        if split not in _WHOLE:
            raise ValueError(f"image folder {path} has no subfolder {split!r}; splits: a "
                             f"subfolder name, or {' / '.join(_WHOLE)} for every image")
        root = path
    files = sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names
                   if f.lower().endswith(IMAGE_SUFFIXES))
    arrays = []
    for f in files:
        try:
            image = tf.io.decode_image(tf.io.read_file(f), dtype=tf.uint8, expand_animations=False)
        except (tf.errors.OpError, ValueError) as e:
            raise ValueError(f"cannot decode image {f} ({' '.join(str(e).split())[:120]})") from e
        arrays.append(image.numpy())
    return _stack(arrays, image_shape, f"folder {root} ({'/'.join(IMAGE_SUFFIXES)})"), None


def _npz(path, split, image_shape):
    if split not in _WHOLE:
        raise ValueError(f"an .npz data set has one split ({' / '.join(_WHOLE)}), got {split!r}")
    if not zipfile.is_zipfile(path):  # np.load would read it as a pickle, or a lone .npy
        raise ValueError(f"{path} is not a NumPy .npz archive (a zip of .npy arrays, as "
                         f"np.savez writes); {_NPZ_ACCEPTED}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            key = next((k for k in NPZ_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ValueError(f"{path} holds arrays {keys}; name the images "
                                 f"{' or '.join(NPZ_KEYS)} (or store only them)")
            x = _npz_array(npz, key, path)
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable .npz archive ({e}); {_NPZ_ACCEPTED}") from e
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 2, 3, 4) or len(x) == 0:
        raise ValueError(f"array {key!r} of {path} has shape {list(x.shape)}; expected images "
                         "[N, H, W, C] (channels last, C in 1..4) or [N, H, W]")
    if np.issubdtype(x.dtype, np.integer) and not np.issubdtype(x.dtype, np.bool_):
        if x.min() < 0 or x.max() > 255:
            raise ValueError(f"integer images of {path} must be 0..255, found "
                             f"[{x.min()}, {x.max()}]")
        x = from_uint8(x)
    elif np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)) or x.min() < -1 or x.max() > 1:
            raise ValueError(f"float images of {path} must lie in the data range [-1, 1], found "
                             f"[{np.nanmin(x)}, {np.nanmax(x)}]; store uint8 0..255 otherwise")
        x = x.astype(np.float32)
    else:
        raise ValueError(f"array {key!r} of {path} has dtype {x.dtype}; expected uint8 or float")
    return (x if image_shape is None else fit(x, image_shape)), None


def _npz_array(npz, key, path):
    """npz[key], refusing an array of Python objects (never loaded: unpickling runs code from
    the file) or a damaged member in words that say what is accepted."""
    try:
        return npz[key]
    except ValueError as e:  # numpy: an object array, or a member that is not a .npy array
        kind = ("an array of Python objects, which is never loaded" if "pickle" in str(e)
                else f"a member that is not a NumPy array ({' '.join(str(e).split())[:100]})")
        raise ValueError(f"array {key!r} of {path} is {kind}; {_NPZ_ACCEPTED}") from None


def _import_tfds(name):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ValueError(f"unknown dataset {name!r}; accepted: {_ACCEPTED} (tfds names need "
                         "tensorflow-datasets: pip install \"ddss_tf[tfds]\")") from None
    return tfds


def _tfds_dataset(name, split):
    tfds = _import_tfds(name)
    try:
        builder = tfds.builder(name)
    except Exception as e:  # DatasetNotFoundError, a bad version or config string
        raise ValueError(f"unknown dataset {name!r}; accepted: {_ACCEPTED} (no such file or "
                         f"folder; tensorflow-datasets: {str(e).splitlines()[0][:150]})") from None
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError:  # how tfds reports a data set that was never prepared
        raise ValueError(
            f"tensorflow-datasets has no prepared copy of {name!r} in {builder.data_dir}; nothing "
            f"is downloaded at run time: prepare it once where the network is reachable (`tfds "
            f"build {name}`) and copy it there or set TFDS_DATA_DIR") from None
    except Exception as e:  # an unknown split
        raise ValueError(f"cannot read split {split!r} of {name!r} ({str(e).splitlines()[0][:150]})"
                         ) from None
    if "image" not in ds.element_spec:
        raise ValueError(f"tensorflow-datasets {name!r} has no 'image' feature (it has "
                         f"{', '.join(sorted(ds.element_spec))})")
    return tfds, ds


def _tfds(name, split, image_shape):
    tfds, ds = _tfds_dataset(name, split)
    spec = ds.element_spec
    has_label = "label" in spec and spec["label"].shape.rank == 0
    ds = ds.map(lambda ex: (ex["image"], ex["label"] if has_label else 0))
    arrays, labels = [], []
    if spec["image"].shape.is_fully_defined():
        for images, lab in tfds.as_numpy(ds.batch(_CHUNK)):
            arrays.append(from_uint8(images) if image_shape is None
                          else fit(from_uint8(images), image_shape))
            labels.append(lab)
        if not arrays:
            raise ValueError(f"split {split!r} of {name!r} is empty")
        images = np.concatenate(arrays)
    else:
        for image, lab in tfds.as_numpy(ds):
            arrays.append(image)
            labels.append([lab])
        images = _stack(arrays, image_shape, f"tensorflow-datasets {name!r} split {split!r}")
    return images, np.concatenate(labels).astype(np.int64) if has_label else None


def _looks_like_path(name):
    return (name.endswith((".npz", "/")) or name.startswith(("/", "./", "../", "~"))
            or os.path.exists(name))


def load(name, split="train", image_shape=None):
    """(images float32 [N, H, W, C] in [-1, 1], labels int64 [N] or None) of a source.

    name: an .npz file, an image folder, or a tensorflow-datasets name (module doc).
    image_shape: (H, W, C) to fit every image to (`fit`), or None to keep them as stored.
    """
    if _looks_like_path(name):
        path = os.path.expanduser(name)
        if os.path.isdir(path):
            return _folder(path, split, image_shape)
        if os.path.isfile(path) and path.endswith(".npz"):
            return _npz(path, split, image_shape)
        what = "no such file or folder" if not os.path.exists(path) else "not a folder or .npz"
        raise ValueError(f"unknown dataset {name!r} ({what}); accepted: {_ACCEPTED}")
    return _tfds(name, split, image_shape)
