"""Feature extractors: the digits classifier, InceptionV3 from three local formats, batching, bad input.

The Inception tests build tiny fake networks with the real tensor names and
signatures in each format (as tensorflow-gan's own tests do), all with the same
weights: images x [B, 299, 299, 3] in [-1, 1] ->
pool_3 = tanh(mean_hw(x) A + b) [B, 2048], logits = pool_3 W [B, 16].
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ddss_tf import metrics
from ddss_tf.nets import classifier as classifier_lib

tf1 = tf.compat.v1
RNG = np.random.default_rng(0)
A = RNG.normal(size=(3, 2048)).astype(np.float32)
B = RNG.normal(size=(2048,)).astype(np.float32) * 0.1
W = (RNG.normal(size=(2048, 16)) / 45.0).astype(np.float32)


def fake_reference(x):
    """The fake network in numpy on [B, 299, 299, 3] inputs in [-1, 1]."""
    pool = np.tanh(x.astype(np.float64).mean(axis=(1, 2)) @ A + B)
    return pool, pool @ W


def write_tf1_hub(path, use_resource):
    """A TF1 Hub-format module: MetaGraphs for tags {} and {"train"}, signature "default"."""
    graph = tf.Graph()
    with graph.as_default():
        images = tf1.placeholder(tf.float32, [None, 299, 299, 3], name="images")
        a = tf1.get_variable("a", initializer=A, use_resource=use_resource)
        b = tf1.get_variable("b", initializer=B, use_resource=use_resource)
        w = tf1.get_variable("w", initializer=W, use_resource=use_resource)
        pool = tf.tanh(tf.matmul(tf.reduce_mean(images, axis=[1, 2]), a) + b, name="pool_3")
        logits = tf.matmul(pool, w, name="logits")
        signature = tf1.saved_model.predict_signature_def(
            {"images": images}, {"pool_3": pool, "logits": logits})
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            builder = tf1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(sess, [], signature_def_map={"default": signature})
            builder.add_meta_graph(["train"], signature_def_map={"default": signature})
            builder.save()
    open(os.path.join(path, "tfhub_module.pb"), "wb").close()


class FakeInception(tf.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.w = tf.Variable(A), tf.Variable(B), tf.Variable(W)

    @tf.function(input_signature=[tf.TensorSpec([None, 299, 299, 3], tf.float32)])
    def __call__(self, images):
        pool = tf.tanh(tf.matmul(tf.reduce_mean(images, axis=[1, 2]), self.a) + self.b)
        return {"pool_3": pool, "logits": tf.matmul(pool, self.w)}


def write_frozen_graph(path):
    """classify_image_graph_def.pb look-alike: DecodeJpeg -> ExpandDims -> ResizeBilinear -> Sub -> Mul
    -> ... -> pool_3 [1, 1, 1, 2048] -> pool_3/_reshape [1, 2048] -> softmax/logits/MatMul (+ biases)."""
    graph = tf.Graph()
    with graph.as_default():
        decoded = tf1.placeholder(tf.float32, [None, None, 3], name="DecodeJpeg")
        expanded = tf.expand_dims(decoded, 0, name="ExpandDims")
        resized = tf1.image.resize_bilinear(expanded, [299, 299], name="ResizeBilinear")
        mul = tf.multiply(tf.subtract(resized, 128.0, name="Sub"), 1.0 / 128.0, name="Mul")
        mean = tf.reduce_mean(mul, axis=[1, 2], keepdims=True)
        conv = tf.nn.conv2d(mean, tf.constant(A[None, None]), 1, "VALID")
        pool = tf.tanh(conv + B, name="pool_3")
        flat = tf.reshape(pool, [1, 2048], name="pool_3/_reshape")
        matmul = tf.matmul(flat, tf.constant(W, name="softmax/weights"), name="softmax/logits/MatMul")
        logits = tf.nn.bias_add(matmul, tf.constant(np.ones(16, np.float32), name="softmax/biases"),
                                name="softmax/logits")
        tf.nn.softmax(logits, name="softmax")
    assert mul.shape == (1, 299, 299, 3) and pool.shape == (1, 1, 1, 2048)  # batch 1 baked in
    with open(path, "wb") as f:
        f.write(graph.as_graph_def(add_shapes=True).SerializeToString())  # with _output_shapes


@pytest.fixture(scope="module")
def fake_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("inception")
    paths = {}
    for use_resource in (False, True):
        paths[f"tf1_hub_{use_resource}"] = str(root / f"hub_{use_resource}")
        write_tf1_hub(paths[f"tf1_hub_{use_resource}"], use_resource)
    paths["saved_model"] = str(root / "tf2")
    tf.saved_model.save(FakeInception(), paths["saved_model"])  # serving_default from __call__
    paths["saved_model_callable"] = str(root / "tf2_callable")
    tf.saved_model.save(FakeInception(), paths["saved_model_callable"], signatures={})
    (root / "fid").mkdir()
    paths["frozen_graph"] = str(root / "fid" / "classify_image_graph_def.pb")
    write_frozen_graph(paths["frozen_graph"])
    return paths


FORMATS = {"tf1_hub_False": "tf1_hub", "tf1_hub_True": "tf1_hub", "saved_model": "saved_model",
           "saved_model_callable": "saved_model", "frozen_graph": "frozen_graph"}


@pytest.mark.parametrize("key", FORMATS)
def test_inception_formats_give_the_fake_network_outputs(fake_paths, key):
    extractor = metrics.load_inception(fake_paths[key], data_range=(0.0, 1.0))
    assert extractor.fingerprint.startswith(f"inception_v3:{FORMATS[key]}:")
    x01 = np.random.default_rng(1).uniform(0, 1, size=(3, 299, 299, 3)).astype(np.float32)
    feats, logits = extractor.features_and_logits(x01)
    pool_ref, logits_ref = fake_reference(2.0 * x01 - 1.0)  # data range [0, 1] -> network range [-1, 1]
    np.testing.assert_allclose(feats.numpy(), pool_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(logits.numpy(), logits_ref, rtol=1e-4, atol=1e-5)
    assert feats.shape == (3, 2048) and logits.shape == (3, 16)


def test_frozen_graph_from_its_directory_and_fed_at_expand_dims(fake_paths):
    """A directory holding classify_image_graph_def.pb loads too. Fed at ExpandDims:0 with TTUR's
    0..255 values, the graph's own (x - 128) / 128 scaling applies."""
    x = np.random.default_rng(2).uniform(-1, 1, size=(2, 299, 299, 3)).astype(np.float32)
    at_mul = metrics.load_inception(os.path.dirname(fake_paths["frozen_graph"]))(x)
    np.testing.assert_allclose(at_mul.numpy(), fake_reference(x)[0], rtol=1e-4, atol=1e-5)
    at_expand = metrics.load_inception(
        fake_paths["frozen_graph"], input_tensor="ExpandDims:0", input_range=(0.0, 255.0))(x)
    ttur_scaled = ((x + 1.0) * 127.5 - 128.0) / 128.0
    np.testing.assert_allclose(at_expand.numpy(), fake_reference(ttur_scaled)[0], rtol=1e-4, atol=1e-5)


def test_small_grey_images_resize_in_graph_and_formats_agree_with_gradients(fake_paths):
    """Digits-like [B, 8, 8, 1] images: tiled to RGB, resized to 299, scaled; same features in
    every format, and the DDSS loss, inside a tf.function, sends finite, non-zero gradients back
    to the images."""
    x = tf.constant(np.random.default_rng(3).uniform(-1, 1, size=(4, 8, 8, 1)).astype(np.float32))
    resized = tf.image.resize(tf.repeat(x, 3, axis=-1), [299, 299], method="bilinear").numpy()
    pool_ref, _ = fake_reference(resized)
    for key in FORMATS:
        extractor = metrics.load_inception(fake_paths[key])

        @tf.function
        def features_and_gradient(images):
            with tf.GradientTape() as tape:
                tape.watch(images)
                feats = extractor(images)
                loss = metrics.kid_loss(feats, pool_ref[:2], "cubic")
            return feats, tape.gradient(loss, images)

        feats, grad = features_and_gradient(x)
        np.testing.assert_allclose(feats.numpy(), pool_ref, rtol=1e-4, atol=1e-5, err_msg=key)
        assert grad is not None and np.all(np.isfinite(grad.numpy())) and np.any(grad.numpy() != 0), key


def test_inception_missing_path_and_unknown_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        metrics.load_inception(tmp_path / "nowhere")
    message = str(err.value)
    assert "\n" not in message and "nowhere" in message
    assert "tfgan/eval/inception/1" in message and "classify_image_graph_def.pb" in message
    with pytest.raises(ValueError, match="accepted formats"):
        metrics.load_inception(tmp_path)
    with pytest.raises(ValueError, match="unknown Inception format 'onnx'"):
        metrics.load_inception(tmp_path, model_format="onnx")


def test_inception_rejects_wrong_channels(fake_paths):
    extractor = metrics.load_inception(fake_paths["saved_model"])
    with pytest.raises(ValueError, match="must have 1 or 3 channels"):
        extractor(np.zeros((2, 8, 8, 2), np.float32))


# ---------------------------------------------------------------- digits classifier
@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(1)
    return classifier_lib.build_classifier()


def test_keras_classifier_extractor_matches_the_features_layer(classifier):
    extractor = metrics.from_keras_classifier(classifier, name="digits_classifier")
    x = np.random.default_rng(4).uniform(-1, 1, size=(7, 8, 8, 1)).astype(np.float32)
    feats, logits = extractor.features_and_logits(x)
    # The reference: a model that stops at the classifier's "features" layer.
    features_model = keras.Model(classifier.input,
                                 classifier.get_layer(classifier_lib.FEATURES_LAYER).output)
    np.testing.assert_allclose(feats.numpy(), features_model(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(logits.numpy(), classifier(x, training=False).numpy(), rtol=1e-6)
    assert extractor.name == "digits_classifier" and extractor.fingerprint.startswith("digits_classifier:")


def test_fingerprint_follows_the_weights(classifier):
    first = metrics.from_keras_classifier(classifier).fingerprint
    keras.utils.set_random_seed(2)
    other = classifier_lib.build_classifier()
    assert metrics.from_keras_classifier(other).fingerprint != first
    assert metrics.from_keras_classifier(classifier).fingerprint == first


def test_extract_in_batches_equals_one_call(classifier):
    extractor = metrics.from_keras_classifier(classifier)
    x = np.random.default_rng(5).uniform(-1, 1, size=(23, 8, 8, 1)).astype(np.float32)
    out = metrics.extract(extractor, x, batch_size=5, progress=False)
    feats, logits = extractor.features_and_logits(x)
    assert out.features.dtype == np.float64 and out.features.shape == (23, 128)
    np.testing.assert_allclose(out.features, feats.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.logits, logits.numpy(), rtol=1e-5, atol=1e-6)


def test_extract_bad_images_raise_one_clear_value_error(classifier):
    extractor = metrics.from_keras_classifier(classifier)
    good = np.zeros((4, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=r"data range \[-1.0, 1.0\], got values in \[0, 255\]"):
        metrics.extract(extractor, good + np.arange(4).reshape(4, 1, 1, 1) * 85, progress=False)
    with pytest.raises(ValueError, match=r"must have shape \[B, 8, 8, 1\], got \(4, 8, 8, 3\)"):
        metrics.extract(extractor, np.zeros((4, 8, 8, 3)), progress=False)
    with pytest.raises(ValueError, match=r"must have shape \[B, H, W, C\]"):
        metrics.extract(extractor, np.zeros((8, 8, 1)), progress=False)
    with pytest.raises(ValueError, match="NaN"):
        metrics.extract(extractor, np.full((4, 8, 8, 1), np.nan), progress=False)
    with pytest.raises(ValueError, match=r"must have shape \[B, 8, 8, 1\]"):
        extractor(tf.zeros([2, 16, 16, 1]))
    # Slightly overshooting samples are fine with clip=True.
    out = metrics.extract(extractor, good + 1.05, clip=True, progress=False)
    np.testing.assert_allclose(out.features, metrics.extract(extractor, good + 1.0, progress=False).features)


def test_from_function_identity_features():
    pixels = metrics.from_function(lambda x: tf.reshape(x, [tf.shape(x)[0], -1]), "pixels")
    x = np.random.default_rng(6).uniform(-1, 1, size=(5, 4, 4, 1))
    out = metrics.extract(pixels, x, batch_size=2, progress=False)
    np.testing.assert_allclose(out.features, x.reshape(5, -1).astype(np.float32))
    assert out.logits is None and pixels.fingerprint == "pixels"
