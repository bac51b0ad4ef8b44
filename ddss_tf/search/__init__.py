"""Differentiable Diffusion Sampler Search (Watson et al. 2022): learn a sampler's coefficients.

    from ddss_tf.search import SearchConfig, run_search
    results = run_search(SearchConfig(num_steps=10), workdir="/tmp/ddss")

Modules: `config` (SearchConfig: what a search is; it builds its sampler), `trainer`
(the step: KID backpropagated through the chain), `strategies` (tf.distribute by name,
and what workers agree on), `workdir` (a work directory's settings and results) and
`run` (run_search and the Run it builds). Scoring and baselines live beside the search
in `ddss_tf.evaluation`.
"""

from ddss_tf.noise import step_noise  # the old spelling; ddss_tf.noise owns it
from ddss_tf.search.config import SearchConfig
from ddss_tf.search.run import run_search
from ddss_tf.search.trainer import Trainer

__all__ = ["SearchConfig", "run_search", "Trainer", "step_noise"]
