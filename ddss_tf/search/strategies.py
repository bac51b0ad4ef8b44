"""Pick a tf.distribute strategy by name.

  default       one device (CPU or one GPU): tf.distribute.get_strategy()
  mirrored      all local GPUs (or all logical CPUs when there is no GPU)
  multi_worker  MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG
  tpu           TPUStrategy; `tpu` names the TPU ("local" on a TPU VM / Colab)
"""

import json
import os
import subprocess
import sys

import tensorflow as tf

__all__ = ["make", "names", "split_cpu", "is_chief_task", "cluster_task", "is_multi_worker",
           "check_same_start", "agreed_stop"]


def names():
    return ("default", "mirrored", "multi_worker", "tpu")


_MIRRORED = {}


def _mirrored():
    """One MirroredStrategy per device set and process: a second one issuing collectives
    (all_gather) in the same process can be handed clashing collective instance keys
    ("Collective instance 101 expected ... data_type 2 but got ... data_type 1", TF 2.21),
    e.g. when a notebook runs two searches."""
    gpus = tf.config.list_logical_devices("GPU")
    devices = tuple(d.name for d in (gpus or tf.config.list_logical_devices("CPU")))
    if devices not in _MIRRORED:
        _MIRRORED[devices] = tf.distribute.MirroredStrategy(devices=list(devices))
    return _MIRRORED[devices]


def cluster_task():
    """(cluster dict, task type, task index) from TF_CONFIG; ValueError when it is missing or
    malformed."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError("strategy multi_worker needs TF_CONFIG (cluster and task) in the environment")
    try:
        cfg = json.loads(raw)
        cfg["cluster"]["worker"]
        return cfg["cluster"], cfg["task"]["type"], int(cfg["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG is not a valid cluster spec with workers and a task ({e})") from e


def is_chief_task(name):
    """Whether this process writes the work directory: always, except on the non-chief tasks
    of a multi_worker cluster (the chief is task "chief", else worker 0)."""
    if name != "multi_worker":
        return True
    cluster, task_type, index = cluster_task()
    return task_type == "chief" or ("chief" not in cluster and task_type == "worker"
                                    and index == 0)


# Kills the process `pid` after `timeout` seconds unless killed first; says why in one line.
_WATCHDOG = (
    "import os, signal, sys, time\n"
    "pid, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]\n"
    "time.sleep(timeout)\n"
    "if os.getppid() == pid:\n"
    "    sys.stderr.write(message + '\\n'); sys.stderr.flush(); os.kill(pid, signal.SIGKILL)\n")


def _multi_worker(timeout):
    """MultiWorkerMirroredStrategy whose collectives give up after `timeout` seconds (a peer
    that hangs: DeadlineExceededError, exit code 4).

    Its constructor waits for every worker in TF_CONFIG without a limit, holding Python's
    GIL, so no thread of this process can end the wait: a watchdog process prints one line
    and kills this one (SIGKILL, exit status 137) if the cluster has not formed within
    `timeout` seconds."""
    cluster, task_type, index = cluster_task()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout or None)
    if not timeout:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    prog = os.path.basename(sys.argv[0]).removesuffix(".py") or "ddss_tf"
    message = (f"{prog}: error: the cluster did not form within {timeout} s: worker "
               f"{task_type}:{index} waited for {json.dumps(cluster)}; start every worker "
               "listed in TF_CONFIG (or raise --worker_timeout)")
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout),
                                 message], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    finally:
        watchdog.kill()
        watchdog.wait()


_TPU = {}


def _tpu(tpu):
    """One TPUStrategy per TPU and process: initialize_tpu_system wipes the TPU's memory, so a
    second search in a notebook must not initialise it again under the first one's variables."""
    if not tpu:
        raise ValueError('strategy tpu needs --tpu: "local" on a TPU VM / Colab, or the TPU name')
    if tpu in _TPU:
        return _TPU[tpu]
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:  # resolver / runtime raise many types when no TPU answers
        msg = " ".join(str(e).split())[:200]
        raise ValueError(f"cannot reach TPU {tpu!r} ({type(e).__name__}: {msg}); "
                         "use --strategy=default on a machine without a TPU") from e
    _TPU[tpu] = tf.distribute.TPUStrategy(resolver)
    return _TPU[tpu]


def split_cpu(num_devices):
    """Present the host CPU as `num_devices` logical devices, so that `mirrored` runs that
    many replicas on a machine without GPUs (rehearsing a multi-device search, tests). Must
    run before TensorFlow initialises its runtime."""
    if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"the number of CPU devices must be a positive integer, got "
                         f"{num_devices!r}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices)
    except RuntimeError as e:
        raise ValueError(f"cannot split the CPU into {num_devices} devices once TensorFlow's "
                         f"runtime has started ({e})") from e


def make(name="default", tpu="", worker_timeout=0):
    """The strategy called `name` (see module docstring); ValueError for unknown names.
    worker_timeout (multi_worker): seconds a worker waits for the cluster to form and for
    one collective; 0: forever."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return _mirrored()
    if name == "multi_worker":
        return _multi_worker(worker_timeout)
    if name == "tpu":
        return _tpu(tpu)
    raise ValueError(f"unknown strategy {name!r}; accepted: {', '.join(names())}")


# ---- agreeing across the workers of a multi-worker run ----

_SIGNALS = (None, "SIGINT", "SIGHUP", "SIGTERM")


def is_multi_worker(strategy):
    """Whether `strategy` spans workers of a cluster (a MultiWorkerMirroredStrategy with a task)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
        getattr(strategy.cluster_resolver, "task_type", None) is not None


def _sum_over_workers(strategy, values):
    """The float64 sum over every replica of every worker of `values` (the same on each)."""
    local = tf.constant(values, tf.float64)
    per_replica = strategy.run(lambda: tf.identity(local))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()


def check_same_start(strategy, step, chief_dir):
    """Every worker must resume from the same step: a worker that cannot see the chief's
    checkpoints (no shared file system) would start again from step 0 and feed gradients of
    other coefficients into the chief's run. The workers all-reduce their steps first."""
    if not is_multi_worker(strategy):
        return
    count, total, squares = _sum_over_workers(strategy, [1.0, step, float(step) ** 2])
    if squares * count != total * total:  # not all equal
        raise ValueError(
            f"the workers resumed from different steps (this one from step {step}, the mean is "
            f"{total / count:g}): every worker must see the chief's checkpoints in {chief_dir}; "
            "give all of them the same --workdir on a shared file system")


def agreed_stop(strategy, received):
    """The signal that stops every worker after this step, or None.

    One worker's SIGTERM must stop all of them at the same step: a worker that left the
    loop alone would leave the others waiting in the next step's collectives. So on a
    multi-worker strategy the workers all-reduce which signals they received (SIGTERM wins
    over SIGHUP, SIGHUP over SIGINT), and every worker saves and stops together. One process:
    its own signal.
    """
    if not is_multi_worker(strategy):
        return received
    total = _sum_over_workers(strategy, [float(received == name) for name in _SIGNALS])
    for name in reversed(_SIGNALS[1:]):
        if total[_SIGNALS.index(name)] > 0:
            return name
    return None
