"""InceptionV3 pool_3 features (2048-d) and logits from a local file, differentiable.

Nothing is downloaded: `load(path)` reads one of three formats from disk.

  "tf1_hub"       the TF1 Hub module tensorflow-gan evaluates with
                  ('tfgan/eval/inception/1', distributed on Kaggle Models under
                  tensorflow/tfgan): a directory with saved_model.pb (+ tfhub_module.pb).
                  Loaded with TensorFlow's own SavedModel loader (tags = the
                  empty set, the module's inference graph), signature "default":
                  images [B, 299, 299, 3] in [-1, 1] -> {"pool_3", "logits"}.
  "saved_model"   a TF2 SavedModel with the same contract: a "default" or
                  "serving_default" signature, or a callable root, taking one
                  float image batch [B, 299, 299, 3] in [-1, 1] and returning a
                  dict with "pool_3" and (optionally) "logits".
  "frozen_graph"  the FID graph classify_image_graph_def.pb (TTUR, inception-2015-12-05).
                  The images enter at tensor "Mul:0" (after the graph's own
                  decoding, resizing and (x - 128) / 128 scaling; [-1, 1], 299x299),
                  features come out of "pool_3:0", and logits are pool_3 times the
                  weight matrix of "softmax/logits/MatMul", as in the OpenAI
                  Inception Score code. TTUR feeds "ExpandDims:0" with uint8-valued
                  images and lets the graph resize with its (legacy, corner-aligned
                  style) bilinear kernel, so scores differ slightly from TTUR's;
                  pass input_tensor="ExpandDims:0", input_range=(0, 255) to feed
                  there instead.

In every format the extractor takes images in the caller's data range at any
size, repeats a single channel to RGB, resizes to 299x299 (tf.image.resize,
bilinear) and maps the data range onto the network's input range, all inside
the graph, so gradients reach the images.
"""

import hashlib
import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from ddss_tf.metrics import features as features_lib

__all__ = ["load", "formats", "INCEPTION_SIZE"]

INCEPTION_SIZE = 299
_FORMATS = ("auto", "tf1_hub", "saved_model", "frozen_graph")
_FROZEN_NAME = "classify_image_graph_def.pb"
_WHAT_TO_GET = (
    "put one of these there (nothing is downloaded at run time): the TF1 Hub module "
    "'tfgan/eval/inception/1' of tensorflow-gan (Kaggle Models, tensorflow/tfgan) unpacked into a "
    "directory, a TF2 SavedModel returning {'pool_3', 'logits'}, or classify_image_graph_def.pb from "
    "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz")


def formats():
    """Every format name `load` accepts."""
    return _FORMATS


def _read_saved_model(directory):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(directory, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def _detect(path):
    """(format, file) for an existing path; ValueError when it holds no known format."""
    if os.path.isfile(path):
        if path.endswith(".pb"):
            return "frozen_graph", path
    elif os.path.isfile(os.path.join(path, "saved_model.pb")):
        proto = _read_saved_model(path)
        is_tf2 = any(len(mg.object_graph_def.nodes) > 0 for mg in proto.meta_graphs)
        if os.path.isfile(os.path.join(path, "tfhub_module.pb")) or not is_tf2:
            return "tf1_hub", path
        return "saved_model", path
    elif os.path.isfile(os.path.join(path, _FROZEN_NAME)):
        return "frozen_graph", os.path.join(path, _FROZEN_NAME)
    raise ValueError(
        f"{path!r} is neither a SavedModel / TF1 Hub module directory (saved_model.pb) nor a frozen "
        f"graph .pb; accepted formats: {', '.join(_FORMATS[1:])}")


def _file_digest(paths):
    digest = hashlib.sha1()
    for p in paths:
        if os.path.isfile(p):
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def _flat(t):
    """[B, ...] -> [B, prod(...)], as tensorflow-gan flattens the module's outputs."""
    return tf.reshape(t, [tf.shape(t)[0], -1])


def _pick_outputs(out, features_key, logits_key):
    if not isinstance(out, dict):
        return {"features": _flat(out)}
    if features_key not in out:
        raise ValueError(
            f"the Inception model has no output {features_key!r}; outputs: {', '.join(sorted(out))}")
    result = {"features": _flat(out[features_key])}
    if logits_key in out:
        result["logits"] = _flat(out[logits_key])
    return result


def _saved_model_net(directory, signature, features_key, logits_key):
    """fn(x [B, 299, 299, 3] in the network range) -> {"features", "logits"?} from a SavedModel.

    With several MetaGraphs (a TF1 Hub module has one for inference, tags {},
    and one for training, tags {"train"}) the inference graph is chosen: tags {}
    or else {"serve"}.
    """
    tag_sets = [set(mg.meta_info_def.tags) for mg in _read_saved_model(directory).meta_graphs]
    tags = None
    if len(tag_sets) > 1:
        tags = next(([*t] for t in (set(), {"serve"}) if t in tag_sets), None)
    obj = tf.saved_model.load(directory, tags=tags)
    names = [signature] if signature else ["default", "serving_default"]
    fn = next((obj.signatures[s] for s in names if s in obj.signatures), None)
    if fn is None and signature is None and callable(obj):
        return lambda x: _pick_outputs(obj(x), features_key, logits_key)
    if fn is None:
        raise ValueError(
            f"the SavedModel at {directory!r} has no signature {' or '.join(names)} and is not callable; "
            f"signatures: {', '.join(obj.signatures) or 'none'}")
    arg_names = list(fn.structured_input_signature[1])
    if len(arg_names) != 1:
        raise ValueError(f"the Inception signature must take one image input, it takes {arg_names}")

    def net(x):
        return _pick_outputs(fn(**{arg_names[0]: x}), features_key, logits_key)

    net.loaded = obj  # keeps the variables alive as long as the extractor
    return net


def _frozen_graph_net(path, input_tensor, features_tensor="pool_3:0",
                      logits_matmul="softmax/logits/MatMul"):
    """fn(x) -> {"features", "logits"?} from a frozen GraphDef, batch size free."""
    with open(path, "rb") as f:
        graph_def = tf.compat.v1.GraphDef.FromString(f.read())
    nodes = {n.name for n in graph_def.node}
    for tensor in (input_tensor, features_tensor):
        if tensor.split(":")[0] not in nodes:
            raise ValueError(f"the frozen graph {path!r} has no tensor {tensor!r}")
    has_logits = logits_matmul in nodes
    returns = [features_tensor] + ([logits_matmul] if has_logits else [])

    def import_graph(x):
        out = tf.compat.v1.import_graph_def(
            graph_def, input_map={input_tensor: x}, return_elements=returns, name="inception")
        return [out[0]] + ([out[1].inputs[1]] if has_logits else [])

    wrapped = tf.compat.v1.wrap_function(
        import_graph, [tf.TensorSpec([None, INCEPTION_SIZE, INCEPTION_SIZE, 3], tf.float32)])
    pruned = wrapped.prune(feeds=wrapped.inputs, fetches=wrapped.outputs)

    def net(x):
        outs = pruned(x)
        pool = _flat(outs[0])
        return {"features": pool, "logits": tf.matmul(pool, outs[1])} if has_logits else {
            "features": pool}

    return net


def _preprocess(images, data_range, input_range):
    """images [B, H, W, 1 or 3] in data_range -> [B, 299, 299, 3] float32 in input_range."""
    x = tf.cast(images, tf.float32)
    if x.shape[-1] == 1:
        x = tf.repeat(x, 3, axis=-1)
    if tuple(x.shape[1:3]) != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = tf.image.resize(x, [INCEPTION_SIZE, INCEPTION_SIZE], method="bilinear")
    (lo, hi), (in_lo, in_hi) = data_range, input_range
    return (x - lo) * ((in_hi - in_lo) / (hi - lo)) + in_lo


def load(path, model_format="auto", data_range=(-1.0, 1.0), signature=None, features_key="pool_3",
         logits_key="logits", input_tensor="Mul:0", input_range=(-1.0, 1.0)):
    """FeatureExtractor for InceptionV3 pool_3 (+ logits) read from a local path.

    Args:
      path: a TF1 Hub module or SavedModel directory, a frozen graph .pb, or a
        directory holding classify_image_graph_def.pb.
      model_format: "auto" (detect) or one of "tf1_hub", "saved_model", "frozen_graph".
      data_range: range of the images the extractor will be given.
      signature: SavedModel signature to call (default: "default", then
        "serving_default", then the callable root).
      features_key, logits_key: output names of the SavedModel signature.
      input_tensor: where a frozen graph is fed (see the module docstring).
      input_range: the value range the network expects at its input.

    Raises:
      FileNotFoundError: the path does not exist (the message says what to get).
      ValueError: unknown format, or the file does not look like InceptionV3.
    """
    if model_format not in _FORMATS:
        raise ValueError(
            f"unknown Inception format {model_format!r}; accepted: {', '.join(_FORMATS)}")
    path = os.path.abspath(os.path.expanduser(str(path)))
    if not os.path.exists(path):
        raise FileNotFoundError(f"no InceptionV3 at {path}: {_WHAT_TO_GET}")
    detected, file = _detect(path)
    model_format = detected if model_format == "auto" else model_format
    if (model_format == "frozen_graph") != (detected == "frozen_graph"):
        raise ValueError(f"{path!r} holds a {detected} model, not a {model_format}")
    if model_format == "frozen_graph":
        net = _frozen_graph_net(file, input_tensor)
        digest = _file_digest([file])
    else:
        net = _saved_model_net(path, signature, features_key, logits_key)
        digest = _file_digest([os.path.join(path, "saved_model.pb"),
                               os.path.join(path, "variables", "variables.index")])

    def fn(images):
        return net(_preprocess(images, data_range, input_range))

    return features_lib.FeatureExtractor(
        fn, "inception_v3", data_range=data_range, image_shape=(None, None, None), channels=(1, 3),
        fingerprint=f"inception_v3:{model_format}:{digest}")
