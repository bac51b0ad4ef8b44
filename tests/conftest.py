"""Test-session setup shared by every test module.

Split the physical CPU into 2 logical devices before TensorFlow initialises its
runtime, so MirroredStrategy tests can run two replicas on one host (docs/design.md,
"Facts about the environment"). Every other test sees "/cpu:0" as usual.

Fixtures: `isolated_cache` (a test module applies it to all its tests with
`pytestmark = pytest.mark.usefixtures("isolated_cache")`).
"""

import os

# The CPU allocator's statistics (tf.config.experimental.get_memory_info, read by the memory
# tests) exist only with TensorFlow's BFC allocator, which TensorFlow picks for the CPU on some
# machines and not on others; ask for it before TensorFlow starts.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_CPUS = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _CPUS[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # the runtime was initialised before this file was imported
    pass


# ---- tiers: pytest markers mirroring BUILD ---------------------------------------------------
# BUILD says which tests are slow: size = "large" (training, subprocesses: 0.5-7 minutes each) or
# tagged "slow". Both get the marker `slow` here (and the large ones `large` too), read from BUILD
# itself so the two cannot drift: `pytest -m "not slow"` is the fast tier.

import os as _os
import re as _re

_BUILD = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "BUILD")


def _build_tiers(path=_BUILD):
    """{test file name: set of markers} for BUILD's large or slow py_tests ({} without BUILD,
    e.g. inside Bazel's runfiles, where --config=ci filters by size and tag instead)."""
    if not _os.path.exists(path):
        return {}
    with open(path) as f:
        text = f.read()
    tiers = {}
    for name, body in _re.findall(r'\npy_test\(\n    name = "(\w+)",(.*?)\n\)', text, _re.S):
        marks = set()
        if 'size = "large"' in body:
            marks |= {"large", "slow"}
        if _re.search(r'tags = \[[^\]]*"slow"', body):
            marks.add("slow")
        if marks:
            tiers[f"{name}.py"] = marks
    return tiers


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a large or slow test in BUILD (left out of the "
                            "fast tier: pytest -m 'not slow')")
    config.addinivalue_line("markers", "large: size = \"large\" in BUILD (training, subprocesses)")


def pytest_collection_modifyitems(config, items):
    tiers = _build_tiers()
    for item in items:
        for mark in sorted(tiers.get(item.path.name, ())):
            item.add_marker(getattr(pytest.mark, mark))


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """DDSS_TF_CACHE (the reference-statistics cache) in the test's tmp_path, so no test reads
    or writes the user's cache or another test's."""
    monkeypatch.setenv("DDSS_TF_CACHE", str(tmp_path / "cache"))
