"""The study's one interval estimator: a two-level bootstrap over (seeds × problems) matrices.

A score matrix has one row per seed (an independent training run) and one column per held-out
problem. A bootstrap replicate resamples the rows with replacement, then the columns with
replacement, and recomputes the statistic; the interval is the central :data:`CONFIDENCE`
quantile range of :data:`N_BOOT` replicates (percentile bootstrap). With one seed it reduces to
the bootstrap over problems. Matrices on the same problems (two runs compared, or pass@k for
several k) share each replicate's column draw, and each matrix draws its own rows. Curves are
(seeds × steps) matrices whose columns are not resampled (``problems=False``).

Problems that come in clusters (the ood split: a few held-out behaviour classes, several problems
each) are not independent draws: a replicate then resamples the clusters with replacement, and
within each drawn cluster its problems with replacement (``clusters``: one label per column;
:func:`cluster_columns`). Treating clustered problems as independent gives intervals that are too
narrow.

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
Where a comparison is not powered and its interval contains both 0 and δ, a claim's verdict is
"undecided (underpowered)" and the interval is reported instead: a wide interval that contains 0
and δ says nothing, either way.

**Reading a difference in both directions** (:func:`one_sided`, :func:`non_inferior`). Power guards
a *null* reading only. A claimed effect Δ ≥ δ is refuted by an interval that lies below δ (hi < δ),
however wide or narrow, and confirmed in direction by one that lies above 0 (lo > 0), whether or not
the comparison is powered; a significant effect smaller than δ is negligible, not a confirmation.
Only an interval that contains both 0 and δ needs the power rule: powered, it reads as no effect of
size δ (a test with 80 % power to detect δ did not); unpowered, it is undecided. Every reading needs
:data:`MIN_SEEDS` seeds per run.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from math import comb
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
EPS = 1e-12  # a bound this close to 0 is rounding (curves interpolated in KL), not a significant difference
_BATCH = 4_000_000  # resampled values held at once (about 32 MB of float64)


def cluster_columns(rng: np.random.Generator, clusters: np.ndarray, n_boot: int = N_BOOT) -> list[np.ndarray]:
    """Column indices of ``n_boot`` cluster-bootstrap replicates: each draws the C clusters with
    replacement, then, within each drawn cluster, as many of its columns as it has, with replacement
    (a two-stage bootstrap). ``clusters``: one label per column. A replicate's length varies with the
    clusters it drew.

    >>> [c.tolist() for c in cluster_columns(np.random.default_rng(0), np.array([0, 0, 1, 1, 1, 2]), n_boot=2)]
    [[5, 2, 2, 2, 4, 3, 4], [1, 1, 1, 1, 1, 1]]

    (the first replicate drew clusters 2, 1 and 1, the second cluster 0 three times)
    """
    labels = np.asarray(clusters)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    drawn = rng.integers(0, len(members), size=(n_boot, len(members)))  # the clusters of every replicate
    out = []
    for b in range(n_boot):
        parts = [members[c][rng.integers(0, len(members[c]), size=len(members[c]))] for c in drawn[b]]
        out.append(np.concatenate(parts))
    return out


def replicates(ms: Sequence[np.ndarray], rng: np.random.Generator, stat: Stat = np.nanmean,
               n_boot: int = N_BOOT, problems: bool = True, clusters: np.ndarray | None = None) -> list[np.ndarray]:
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
    ``clusters`` (one label per column, with ``problems=True``): the columns are drawn by
    :func:`cluster_columns` instead (clusters, then columns within them), after the rows as above.
    """
    flat = [np.ndim(m) == 2 for m in ms]  # a single statistic: drop the K axis again at the end
    ms3 = [np.asarray(m, dtype=float).reshape((-1, *np.shape(m)[-2:])) for m in ms]  # (K, S, P) each
    n_problems = {m.shape[2] for m in ms3}
    if len(n_problems) != 1:
        raise ValueError(f"matrices cover different problem sets ({sorted(n_problems)} problems)")
    P = n_problems.pop()
    rows = [rng.integers(0, m.shape[1], size=(n_boot, m.shape[1])) for m in ms3]  # (n_boot, S_i) each
    if clusters is not None and problems:
        if len(clusters) != P:
            raise ValueError(f"{len(clusters)} cluster labels for {P} problems")
        cols = cluster_columns(rng, clusters, n_boot)
        return [_clustered(m, r, cols, stat, single) for m, r, single in zip(ms3, rows, flat)]
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


def _clustered(m: np.ndarray, rows: np.ndarray, cols: list[np.ndarray], stat: Stat, single: bool) -> np.ndarray:
    """One matrix's replicates on cluster-bootstrap columns (a loop: the replicates differ in length)."""
    boots = np.empty((len(cols), m.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for b, c in enumerate(cols):
            boots[b] = stat(m[:, rows[b][:, None], c[None, :]], axis=(-2, -1))
    return boots[:, 0] if single else boots


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
             n_boot: int = N_BOOT, clusters: np.ndarray | None = None) -> tuple[float, float, float]:
    """(point, lo, hi) of ``stat`` over one (seeds × problems) matrix (``clusters``: the problems'
    clusters, resampled as :func:`cluster_columns` draws them)."""
    m = np.atleast_2d(np.asarray(m, dtype=float))
    lo, hi = quantiles(replicates([m], rng, stat, n_boot, clusters=clusters)[0])
    return float(_point(m, stat)), float(lo), float(hi)


def intervals(ms: np.ndarray, rng: np.random.Generator, stat: Stat = np.nanmean,
              n_boot: int = N_BOOT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`interval` for K statistics on one draw: ms is (K × seeds × problems). Returns point, lo,
    hi, each of shape (K,)."""
    ms = np.asarray(ms, dtype=float)
    lo, hi = quantiles(replicates([ms], rng, stat, n_boot)[0])
    return _point(ms, stat), lo, hi


def diff_interval(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, stat: Stat = np.nanmean,
                  n_boot: int = N_BOOT, clusters: np.ndarray | None = None) -> tuple[float, float, float]:
    """(point, lo, hi) of stat(a) − stat(b), two (seeds × problems) matrices on the same problems:
    the problems (or their ``clusters``, then the problems within) are resampled jointly (paired),
    each run's seeds independently."""
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    ra, rb = replicates([a, b], rng, stat, n_boot, clusters=clusters)
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


def one_sided(point: float, lo: float, hi: float, delta: float, seeds: int) -> str:
    """How a difference reads against a claimed effect Δ ≥ ``delta`` > 0 (flip the signs of a claim
    that something is smaller): ``"effect"`` (the CI lies above 0 and the point is ≥ δ),
    ``"negligible"`` (the CI lies above 0, the point is below δ), ``"excluded"`` (the CI lies below δ:
    an effect of δ is refuted, powered or not), ``"null"`` (the CI contains 0 and δ, and the comparison
    is :func:`powered` for δ: no effect of that size), ``"undecided"`` (the CI contains 0 and δ
    without the power, or fewer than :data:`MIN_SEEDS` seeds, or no interval).

    >>> one_sided(0.05, 0.03, 0.07, 0.02, 3), one_sided(0.01, 0.005, 0.015, 0.02, 3)
    ('effect', 'negligible')
    >>> one_sided(-0.016, -0.034, 0.002, 0.02, 10), one_sided(0.0, -0.05, 0.06, 0.02, 3)
    ('excluded', 'undecided')
    >>> one_sided(0.01, -0.003, 0.023, 0.02, 3), one_sided(0.05, 0.03, 0.07, 0.02, seeds=1)
    ('null', 'undecided')
    """
    if not (np.isfinite(lo) and np.isfinite(hi)) or seeds < MIN_SEEDS:
        return "undecided"
    if lo > EPS:
        return "effect" if point >= delta else "negligible"
    if hi < delta:
        return "excluded"
    return "null" if powered(lo, hi, delta, seeds) else "undecided"


def non_inferior(point: float, lo: float, hi: float, margin: float, seeds: int) -> str:
    """How a difference Δ = new − old reads against "new is at least as good", with non-inferiority
    margin ``margin`` > 0: ``"shown"`` (the CI lies above −margin), ``"excluded"`` (the CI lies below
    −margin: worse by more than the margin), ``"null"`` (the CI contains −margin and the comparison is
    :func:`powered` for the margin: it had the power to show non-inferiority and did not),
    ``"undecided"`` (the CI contains −margin without the power, or fewer than :data:`MIN_SEEDS` seeds).

    >>> non_inferior(0.0, -0.01, 0.01, 0.02, 3), non_inferior(-0.05, -0.07, -0.03, 0.02, 3)
    ('shown', 'excluded')
    >>> non_inferior(-0.015, -0.025, -0.005, 0.02, 3), non_inferior(0.0, -0.05, 0.05, 0.02, 3)
    ('null', 'undecided')
    """
    if not (np.isfinite(lo) and np.isfinite(hi)) or seeds < MIN_SEEDS:
        return "undecided"
    if lo > -margin:
        return "shown"
    if hi < -margin:
        return "excluded"
    return "null" if powered(lo, hi, margin, seeds) else "undecided"


def exceedance(values: np.ndarray, groups: np.ndarray, rate: float = 0.05, tol: float = 1e-9) -> tuple[float, float, int]:
    """A drop threshold calibrated on repeated measurements of one thing: ``values`` are repeats
    (``groups``: the repeats that share their randomness, e.g. one sampling seed, form a group; only
    pairs of different groups are compared). Over every ordered pair (i, j) of different groups the
    drop is values[i] − values[j]; the threshold is the smallest observed drop t (or 0) such that at
    most ``rate`` of the pairs drop by more than t (+ ``tol``). Returns (t, the share of pairs that drop
    by more than t, the number of pairs); (NaN, NaN, 0) with fewer than two groups.

    >>> t, share, n = exceedance(np.array([0.60, 0.62, 0.64, 0.70]), np.arange(4), rate=0.1)
    >>> round(t, 6), round(share, 4), n  # one pair of 12 (0.70 -> 0.60) drops by more than 0.08
    (0.08, 0.0833, 12)
    """
    v, g = np.asarray(values, dtype=float), np.asarray(groups)
    pairs = g[:, None] != g[None, :]
    if not pairs.any():
        return np.nan, np.nan, 0
    drops = (v[:, None] - v[None, :])[pairs]
    for t in np.unique(np.r_[0.0, drops[drops > 0]]):
        share = float(np.mean(drops > t + tol))
        if share <= rate:
            return float(t), share, int(pairs.sum())
    return np.nan, np.nan, int(pairs.sum())  # unreachable: the largest drop exceeds no pair


def count_test(a: int, b: int, n_a: int, n_b: int) -> float:
    """Two-sided exact p-value that two event counts differ more than chance: ``a`` events in ``n_a``
    chances against ``b`` in ``n_b``, under one common event rate. Given the total a + b, a is then
    Binomial(a + b, n_a / (n_a + n_b)); the p-value sums the probabilities of every split no more
    likely than the observed one (1 where there is no event).

    >>> round(count_test(0, 8, 80, 80), 4), count_test(0, 1, 80, 80), count_test(0, 0, 80, 80)
    (0.0078, 1.0, 1.0)
    """
    n, q = a + b, n_a / (n_a + n_b)
    if n == 0:
        return 1.0
    prob = [comb(n, k) * q ** k * (1 - q) ** (n - k) for k in range(n + 1)]
    return float(min(1.0, sum(p for p in prob if p <= prob[a] * (1 + 1e-9))))
