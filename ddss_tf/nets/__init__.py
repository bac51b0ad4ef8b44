"""Keras networks: the diffusion UNet and the small feature classifier."""
