"""Molecular design by interleaving quantum chemistry with reinforcement learning."""
__version__ = "0.1.0"
