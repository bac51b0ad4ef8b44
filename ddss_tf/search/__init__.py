"""Differentiable Diffusion Sampler Search (Watson et al. 2022): learn a sampler's coefficients.

    from ddss_tf.search import SearchConfig, run_search
    results = run_search(SearchConfig(num_steps=10), workdir="/tmp/ddss")

Modules: `config` (SearchConfig: what a search is; it builds its sampler), `objectives`
(what a search minimises: KID, LD3, KID + teacher, one module each behind a registry),
`teacher` (a many-step teacher's pairs), `trainer` (the step: the objective's loss
backpropagated through the chain), `strategies` (tf.distribute by name, and what workers
agree on), `workdir` (a work directory's files, settings and results) and `run`
(run_search and the Run it builds). Scoring, baselines and the report live beside the
search in `ddss_tf.evaluation`.
"""

from ddss_tf.search.config import SearchConfig
from ddss_tf.search.run import run_search
from ddss_tf.search.trainer import Trainer

__all__ = ["SearchConfig", "run_search", "Trainer"]
