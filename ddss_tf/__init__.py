"""ddss_tf: learned fast samplers for diffusion models (DDSS, Watson et al. 2022) in TensorFlow / Keras."""

__version__ = "0.1.0"
