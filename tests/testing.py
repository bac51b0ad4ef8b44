"""Running the repository's binaries and commands in subprocesses (test helper).

Every test that starts a process goes through here, so the process sees this checkout's ddss_tf
(PYTHONPATH = ROOT, whatever is installed) and, when the test gives its tmp_path, a reference-
statistics cache of its own. (The in-process counterpart, DDSS_TF_CACHE in the test's tmp_path,
is conftest's `isolated_cache` fixture.)

    proc = testing.run_binary("ddss_sample", "--family=ddim", env=testing.binary_env(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
"""

import os
import subprocess
import sys

__all__ = ["ROOT", "binary_command", "binary_env", "run", "run_binary", "run_tool"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A bound for a hung process, not an expected duration: the slowest runs (a tiny ddss_search
# under a loaded 2-core machine) take a few minutes.
TIMEOUT = 600


def binary_env(tmp_path=None, **extra):
    """os.environ with ROOT as PYTHONPATH; DDSS_TF_CACHE = tmp_path / "cache" when tmp_path is
    given; then `extra` (strings), which may override either."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    if tmp_path is not None:
        env["DDSS_TF_CACHE"] = os.path.join(tmp_path, "cache")
    env.update(extra)
    return env


def binary_command(name, *flags):
    """The argv that runs bin/<name>.py with this interpreter (for subprocess.Popen)."""
    return [sys.executable, os.path.join(ROOT, "bin", name + ".py"), *flags]


def run(args, env=None, timeout=TIMEOUT, cwd=None):
    """Run argv `args` to completion (in `cwd`, default this process's); env None:
    binary_env(). Returns the CompletedProcess (text stdout and stderr captured)."""
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd,
                          env=binary_env() if env is None else env, timeout=timeout)


def run_binary(name, *flags, env=None, timeout=TIMEOUT, cwd=None):
    """Run bin/<name>.py with `flags` (see run)."""
    return run(binary_command(name, *flags), env=env, timeout=timeout, cwd=cwd)


def run_tool(name, *flags, env=None, timeout=TIMEOUT):
    """Run tools/<name>.py (a measurement program, not installed) with `flags` (see run)."""
    return run([sys.executable, os.path.join(ROOT, "tools", name + ".py"), *flags], env=env,
               timeout=timeout)
