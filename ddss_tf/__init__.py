"""ddss_tf: learned fast samplers for diffusion models (DDSS, Watson et al. 2022) in TensorFlow / Keras.

The data flow of a search, each stage with one owner (README, "How the code is organised"):

    model (models) -> denoiser (denoisers) -> sampler (samplers; noise) -> features (metrics)
        -> loss (metrics.mmd) -> trainer (search)

with `evaluation` beside the loop (scores, baselines, the many-step reference), used by
the search and `benchmark`; `export` and `sampling` take a learned sampler to a
SavedModel and to samples.
"""

__version__ = "0.1.0"
