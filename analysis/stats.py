"""The study's one interval estimator: a two-level bootstrap over (seeds × problems) matrices.

A score matrix has one row per seed (an independent training run) and one column per held-out
problem. A bootstrap replicate resamples the rows with replacement, then the columns with
replacement, and recomputes the statistic; the interval is the central :data:`CONFIDENCE`
quantile range of :data:`N_BOOT` replicates (percentile bootstrap). With one seed it reduces to
the bootstrap over problems. Matrices on the same problems (two runs compared, or pass@k for
several k) share each replicate's column draw, and each matrix draws its own rows. Curves are
(seeds × steps) matrices whose columns are not resampled (``problems=False``).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> spo = rng.binomial(1, 0.6, size=(3, 200)).astype(float)  # 3 seeds × 200 problems
    >>> ppo = rng.binomial(1, 0.5, size=(3, 200)).astype(float)
    >>> point, lo, hi = interval(spo, np.random.default_rng(1))
    >>> lo < point < hi
    True
    >>> est = interval_estimates({"spo": spo, "ppo": ppo}, np.random.default_rng(1))
    >>> sorted(est), est["spo"] == (point, lo, hi)
    (['ppo', 'spo'], True)
    >>> d, d_lo, d_hi = diff_interval(spo, ppo, np.random.default_rng(1))
    >>> bool(np.isclose(d, spo.mean() - ppo.mean()))
    True

``stat`` is any numpy-style reduction called as ``stat(x, axis=...)`` (``np.nanmean``, the
default, ``np.nanmedian``, ...), so one call reduces a whole batch of replicates at once.

**When an interval may judge (the power rule).** A claim looks for an effect of size δ (its
rule names it). Read a difference Δ̂ with its interval as a test of Δ = 0 at two-sided level
α = :data:`ALPHA`, with Δ̂ ≈ N(Δ, SE²). It rejects when |Δ̂| > z_{1−α/2}·SE, so its power at a true
Δ = δ > 0 is about Φ(δ/SE − z_{1−α/2}); power ≥ 1 − β = :data:`POWER` needs

    δ ≥ (z_{1−α/2} + z_{1−β})·SE = (1.960 + 0.842)·SE = 2.80·SE          (α = 0.05, power 0.8).

The :data:`CONFIDENCE` interval's half-width is h = z_{(1+CONFIDENCE)/2}·SE = 1.960·SE, so
SE = h/1.960 and the condition reads

    h ≤ 1.960/2.80·δ = 0.70·δ,  equivalently  MDE = 2.80/1.960·h = 1.43·h ≤ δ,

where MDE (:func:`detectable`) is the smallest effect the comparison detects with that power and
h = (hi − lo)/2 of the percentile bootstrap. :func:`powered` applies it. A non-inferiority margin
m is the same rule with δ = m (one-sided test of Δ ≤ −m at α/2, power at Δ = 0). An interval
drawn from one seed per run has no seed-to-seed component (the bootstrap cannot resample what was
run once), so it understates SE: :func:`powered` also needs :data:`MIN_SEEDS` seeds per run.
Where a comparison is not powered, a claim's verdict is "undecided (underpowered)" and the
interval is reported instead: a wide interval that contains 0 says nothing, either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from statistics import NormalDist

import numpy as np

N_BOOT = 2000  # bootstrap replicates of every interval
CONFIDENCE = 0.95  # coverage of every interval
Stat = Callable[..., np.ndarray]  # stat(x, axis=...) -> x reduced over those axes
ALPHA = 0.05  # two-sided level of the test a verdict stands for (the power rule)
POWER = 0.80  # power a verdict needs at the claim's effect size δ
MIN_SEEDS = 2  # seeds per run below which no interval judges (it has no seed-to-seed component)
Z_CI = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)  # 1.960: an interval's half-width in standard errors
DETECT_SE = NormalDist().inv_cdf(1 - ALPHA / 2) + NormalDist().inv_cdf(POWER)  # 2.802: δ/SE that is detected
MAX_HALF_WIDTH = Z_CI / DETECT_SE  # 0.700: the widest half-width, in units of δ, that judges
_BATCH = 4_000_000  # resampled values held at once (about 32 MB of float64)


def replicates(ms: Sequence[np.ndarray], rng: np.random.Generator, stat: Stat = np.nanmean,
               n_boot: int = N_BOOT, problems: bool = True) -> list[np.ndarray]:
    """Bootstrap replicates of ``stat`` for each matrix of ``ms``: the core every interval uses.

    ms: matrices of shape (seeds, problems) or (K, seeds, problems) (K statistics on the same
        draw, e.g. pass@k for k = 1..K); seeds may differ between matrices, problems may not.
    Draws, in this order: each matrix's row indices of every replicate (its seeds, independently
    of the other matrices), then the column indices of every replicate (the problems), which all
    matrices share. With
    ``problems=False`` columns are kept as they are (curves: the columns are steps) and ``stat``
    reduces the rows only.
    Returns one array per matrix: (n_boot,) for a 2-D matrix, (n_boot, K) for a 3-D one;
    (n_boot, columns) and (n_boot, K, columns) with ``problems=False``.
    """
    flat = [np.ndim(m) == 2 for m in ms]  # a single statistic: drop the K axis again at the end
    ms3 = [np.asarray(m, dtype=float).reshape((-1, *np.shape(m)[-2:])) for m in ms]  # (K, S, P) each
    n_problems = {m.shape[2] for m in ms3}
    if len(n_problems) != 1:
        raise ValueError(f"matrices cover different problem sets ({sorted(n_problems)} problems)")
    P = n_problems.pop()
    rows = [rng.integers(0, m.shape[1], size=(n_boot, m.shape[1])) for m in ms3]  # (n_boot, S_i) each
    cols = rng.integers(0, P, size=(n_boot, P)) if problems else np.broadcast_to(np.arange(P), (n_boot, P))
    axis = (-2, -1) if problems else -2  # reduce seeds and problems, or seeds only
    out = []
    for m, r, single in zip(ms3, rows, flat):
        K, S, _ = m.shape
        boots = np.empty((K, n_boot) if problems else (K, n_boot, P))
        step = max(1, _BATCH // (K * S * P))  # replicates per batch
        for b in range(0, n_boot, step):
            x = m[:, r[b:b + step, :, None], cols[b:b + step, None, :]]  # (K, b, S, P)
            with warnings.catch_warnings():  # all-NaN columns (a step no seed logged) give NaN, silently
                warnings.simplefilter("ignore", RuntimeWarning)
                boots[:, b:b + step] = stat(x, axis=axis)
        boots = np.moveaxis(boots, 0, 1)  # (n_boot, K[, P])
        out.append(boots[:, 0] if single else boots)
    return out


def quantiles(boots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The central :data:`CONFIDENCE` range of replicates along axis 0 (NaN replicates ignored; NaN
    where every replicate is, e.g. a per-solved value of a run that solved no problem)."""
    a = (1 - CONFIDENCE) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, silently
        return np.nanquantile(boots, a, axis=0), np.nanquantile(boots, 1 - a, axis=0)


def _point(m: np.ndarray, stat: Stat) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return stat(np.asarray(m, dtype=float), axis=(-2, -1))


def interval(m: np.ndarray, rng: np.random.Generator, stat: Stat = np.nanmean,
             n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """(point, lo, hi) of ``stat`` over one (seeds × problems) matrix."""
    m = np.atleast_2d(np.asarray(m, dtype=float))
    lo, hi = quantiles(replicates([m], rng, stat, n_boot)[0])
    return float(_point(m, stat)), float(lo), float(hi)


def intervals(ms: np.ndarray, rng: np.random.Generator, stat: Stat = np.nanmean,
              n_boot: int = N_BOOT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`interval` for K statistics on one draw: ms is (K × seeds × problems). Returns point, lo,
    hi, each of shape (K,)."""
    ms = np.asarray(ms, dtype=float)
    lo, hi = quantiles(replicates([ms], rng, stat, n_boot)[0])
    return _point(ms, stat), lo, hi


def diff_interval(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, stat: Stat = np.nanmean,
                  n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """(point, lo, hi) of stat(a) − stat(b), two (seeds × problems) matrices on the same problems:
    the problems are resampled jointly (paired), each run's seeds independently."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    ra, rb = replicates([a, b], rng, stat, n_boot)
    lo, hi = quantiles(ra - rb)
    return float(_point(a, stat) - _point(b, stat)), float(lo), float(hi)


def diff_intervals(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, stat: Stat = np.nanmean,
                   n_boot: int = N_BOOT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`diff_interval` for K statistics on one draw: a and b are (K × seeds × problems). Returns
    point, lo, hi, each of shape (K,)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ra, rb = replicates([a, b], rng, stat, n_boot)
    lo, hi = quantiles(ra - rb)
    return _point(a, stat) - _point(b, stat), lo, hi


def interval_estimates(score_dict: Mapping[str, np.ndarray], rng: np.random.Generator, stat: Stat = np.nanmean,
                       n_boot: int = N_BOOT) -> dict[str, tuple[float, float, float]]:
    """{name: (seeds × problems) matrix} -> {name: (point, lo, hi)}, as rliable's
    ``get_interval_estimates``; one draw of ``rng`` per matrix, in the dict's order."""
    return {name: interval(m, rng, stat, n_boot) for name, m in score_dict.items()}


def seed_band(values: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Curves: a (seeds × steps) matrix -> seed mean, lo, hi per step, bootstrap over seeds only
    (NaN where no seed logged that step; zero width with one seed)."""
    v = np.atleast_2d(np.asarray(values, dtype=float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(v, axis=0)
    if v.shape[0] == 1:
        return mean, mean.copy(), mean.copy()
    lo, hi = quantiles(replicates([v], rng, np.nanmean, n_boot, problems=False)[0])
    return mean, lo, hi


def diff_band(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT, paired: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Curves: two (seeds × steps) matrices on the same steps (or KL levels) -> seed mean of a minus
    seed mean of b, lo, hi per column, bootstrap over seeds (columns kept). Each run's seeds are
    resampled independently, or, with ``paired``, jointly: row i of a and of b are the same seed
    (e.g. validation with the same sampling seed, so they share its random numbers), and each
    replicate draws one set of seeds for both, as the core draws problems for matrices it compares."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    if paired:
        if a.shape != b.shape:
            raise ValueError(f"paired curves need the same seeds and columns, got {a.shape} and {b.shape}")
        # (columns, 1, seeds): the seeds become the core's shared column axis, each column one statistic
        ra, rb = replicates([a.T[:, None, :], b.T[:, None, :]], rng, np.nanmean, n_boot)
    else:
        ra, rb = replicates([a, b], rng, np.nanmean, n_boot, problems=False)
    lo, hi = quantiles(ra - rb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=0) - np.nanmean(b, axis=0), lo, hi


def seed_sd(x: np.ndarray, axis=(-2, -1)) -> np.ndarray:
    """A ``stat`` for the core: the standard deviation over seeds (ddof 1) of each seed's mean over
    problems, for (…, seeds, problems) arrays (``axis`` must be the last two)."""
    if tuple(np.atleast_1d(axis)) != (-2, -1):
        raise ValueError("seed_sd reduces the last two axes (seeds, problems) only")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanstd(np.nanmean(x, axis=-1), axis=-1, ddof=1)


def detectable(lo: float, hi: float) -> float:
    """The minimum detectable effect of a comparison whose :data:`CONFIDENCE` interval is [lo, hi]:
    MDE = (DETECT_SE / Z_CI)·(hi − lo)/2 = 1.43 × the half-width (the power rule, module docstring).

    >>> round(detectable(-0.02, 0.02), 4)  # half-width 0.02: detects 0.0286 with 80 % power
    0.0286
    """
    return DETECT_SE / Z_CI * (hi - lo) / 2


def powered(lo: float, hi: float, delta: float, seeds: int) -> bool:
    """Whether a comparison with interval [lo, hi], over runs of at least ``seeds`` seeds each, has
    :data:`POWER` at two-sided :data:`ALPHA` to detect an effect ``delta``: MDE ≤ δ, i.e. the
    half-width ≤ 0.70·δ, and ≥ :data:`MIN_SEEDS` seeds (the power rule, module docstring).

    >>> powered(-0.01, 0.017, 0.02, seeds=3), powered(-0.01, 0.03, 0.02, seeds=3), powered(0, 0, 0.02, seeds=1)
    (True, False, False)
    """
    return bool(np.isfinite(lo) and np.isfinite(hi) and seeds >= MIN_SEEDS and detectable(lo, hi) <= delta)


def decisive(lo: float, hi: float, delta: float, seeds: int) -> bool:
    """Whether a comparison may be judged: it is :func:`powered` for ``delta``, or its interval already
    excludes 0 over ≥ :data:`MIN_SEEDS` seeds. Power guards a *null* reading (a CI that contains 0 says
    "no effect of size δ" only if it could have detected δ); a difference whose CI excludes 0 is
    significant at :data:`ALPHA` whatever the power, and its direction stands.

    >>> decisive(-0.65, -0.60, 0.02, seeds=3), decisive(-0.065, 0.01, 0.02, seeds=3), decisive(0.1, 0.2, 0.02, 1)
    (True, False, False)
    """
    significant = bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0))
    return powered(lo, hi, delta, seeds) or (significant and seeds >= MIN_SEEDS)
