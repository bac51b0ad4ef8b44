"""Keras networks: the diffusion UNet, the small feature classifier, and a SavedModel diffusion
network wrapped as a Keras model (saved_model_net)."""
