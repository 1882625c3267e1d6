"""pass@k (Chen et al. 2021, HumanEval) and percentile-bootstrap confidence intervals.

pass@k = E_problems[1 - C(n-c, k) / C(n, k)], with n samples per problem of which c are correct.
"""

from collections.abc import Callable, Sequence

import numpy as np


def _check(n: int, c: int, k: int) -> None:
    if n < 1:
        raise ValueError(f"pass@k needs n >= 1 samples, got n={n}")
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if c < 0:
        raise ValueError(f"number of correct samples must be >= 0, got c={c}")
    if c > n:
        raise ValueError(f"number of correct samples c={c} exceeds number of samples n={n}")
    if k > n:
        raise ValueError(f"k={k} exceeds number of samples n={n}; pass@k is undefined")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n-c, k) / C(n, k).

    Computed stably in float64 as 1 - prod_{i=n-c+1}^{n} (1 - k/i); equals 1.0 when n - c < k.
    """
    n, c, k = int(n), int(c), int(k)
    _check(n, c, k)
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def pass_at_k_array(n: np.ndarray | Sequence[int], c: np.ndarray | Sequence[int], k: int) -> np.ndarray:
    """Per-problem unbiased pass@k, float64 array of 1 - C(n_j-c_j, k) / C(n_j, k).

    n may be a scalar (same n for all problems) or an array matching c.
    """
    c_arr = np.asarray(c)
    n_arr = np.broadcast_to(np.asarray(n), c_arr.shape)
    if c_arr.ndim != 1:
        raise ValueError(f"c must be 1-D (one entry per problem), got shape {c_arr.shape}")
    return np.array(
        [pass_at_k(int(ni), int(ci), k) for ni, ci in zip(n_arr, c_arr, strict=True)], dtype=np.float64
    )


def bootstrap_ci(
    values: np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 2000,
    alpha: float = 0.05,
    stat: Callable[..., np.ndarray | float] = np.mean,
) -> tuple[float, float, float]:
    """Percentile bootstrap over the first axis: (stat(values), q_{alpha/2}, q_{1-alpha/2}).

    Each replicate resamples len(values) rows with replacement and applies stat(sample),
    which must return a scalar.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or values.shape[0] == 0:
        raise ValueError("bootstrap_ci needs a non-empty array of values")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    m = values.shape[0]
    point = float(stat(values))
    idx = rng.integers(0, m, size=(n_boot, m))
    reps = np.array([float(stat(values[i])) for i in idx], dtype=np.float64)
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)
