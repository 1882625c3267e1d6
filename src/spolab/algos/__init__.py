"""Algorithms: pure losses (losses.py) and one thin update step per algorithm behind a registry."""

from spolab.algos.base import ALGORITHMS, Algorithm, ConfigError, get_algorithm

# importing the modules registers the algorithms
from spolab.algos import grpo, ppo, spo  # noqa: E402, F401  isort: skip

__all__ = ["ALGORITHMS", "Algorithm", "ConfigError", "get_algorithm"]
