"""@local_python: a py_runtime toolchain on $PYTHON_BIN_PATH, else on the python3 first on PATH.

Pass it per command, `bazel test --repo_env=PYTHON_BIN_PATH=$VENV/bin/python ...`: the repository is
made again whenever PYTHON_BIN_PATH or PATH changes. The interpreter must have the project's
requirements (`pip install -e ".[cpu,test]"`); third-party packages are not Bazel targets here.
"""

_BUILD = """
load("@bazel_tools//tools/python:toolchain.bzl", "py_runtime_pair")

py_runtime(
    name = "python3",
    interpreter_path = "{python}",
    python_version = "PY3",
)

py_runtime_pair(
    name = "runtime_pair",
    py3_runtime = ":python3",
)

toolchain(
    name = "toolchain",
    toolchain = ":runtime_pair",
    toolchain_type = "@bazel_tools//tools/python:toolchain_type",
)
"""

def _local_python_impl(ctx):
    python = ctx.os.environ.get("PYTHON_BIN_PATH") or ctx.which("python3")
    if not python:
        fail("no Python: pass --repo_env=PYTHON_BIN_PATH=/path/to/python or put python3 on PATH")
    python = str(python)
    if not python.startswith("/") or not ctx.path(python).exists:
        fail("PYTHON_BIN_PATH=%s is not the absolute path of an existing file" % python)
    ctx.file("WORKSPACE", "")
    ctx.file("BUILD", _BUILD.format(python = python))

local_python = repository_rule(
    implementation = _local_python_impl,
    environ = ["PYTHON_BIN_PATH", "PATH"],
    local = True,
)
