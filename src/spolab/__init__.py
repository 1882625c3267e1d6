"""spolab: Soft Policy Optimization (Cohen et al., 2025, arXiv:2503.05453) against PPO, GRPO
and RLOO, as one reproducible pipeline. Not to be confused with other methods called "SPO"."""

__version__ = "0.1.0"

from spolab import paths as _paths  # noqa: E402, F401  registers the configs' ${path:<name>} resolver
