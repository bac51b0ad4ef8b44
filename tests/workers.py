"""Localhost clusters for the multi-worker tests: free ports and each worker's TF_CONFIG."""

import json
import socket

__all__ = ["localhost_cluster", "tf_config"]


def localhost_cluster(num_workers):
    """{"worker": ["localhost:<port>", ...]} on ports free right now."""
    socks = [socket.socket() for _ in range(num_workers)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return {"worker": [f"localhost:{p}" for p in ports]}


def tf_config(cluster, index):
    """The TF_CONFIG value of worker `index` of `cluster`."""
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
