"""Differentiable Diffusion Sampler Search (Watson et al. 2022): the training loop and the main job.

    from ddss_tf.search import SearchConfig, run_search
    results = run_search(SearchConfig(num_steps=10), workdir="/tmp/ddss")
"""

from ddss_tf.search.config import SearchConfig
from ddss_tf.search.run import run_search
from ddss_tf.search.trainer import Trainer, step_noise

__all__ = ["SearchConfig", "run_search", "Trainer", "step_noise"]
