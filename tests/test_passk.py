import math

import numpy as np
import pytest

from spolab.eval.passk import bootstrap_ci, pass_at_k, pass_at_k_array


def exact(n: int, c: int, k: int) -> float:
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)  # math.comb(a, b) == 0 when b > a


CASES = [
    (n, c, k)
    for n in (1, 2, 5, 10, 16, 50, 200)
    for c in sorted({0, 1, n // 3, n // 2, n - 1, n})
    for k in sorted({1, 2, n // 2, n - 1, n})
    if 0 <= c <= n and 1 <= k <= n
]


@pytest.mark.parametrize("n,c,k", CASES)
def test_pass_at_k_matches_combinatorics(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(exact(n, c, k), rel=1e-12, abs=1e-12)


def test_pass_at_k_special_values():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 7, 4) == 1.0  # n - c < k: every k-subset has a correct sample
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 = c / n
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6


def test_pass_at_k_large_n_is_finite():
    # C(1000, 500) overflows float64; the product form must not.
    v = pass_at_k(1000, 3, 500)
    assert v == pytest.approx(exact(1000, 3, 500), rel=1e-10)
    assert 0.0 < v < 1.0


@pytest.mark.parametrize(
    "n,c,k",
    [(5, 2, 6), (5, 6, 1), (5, 2, 0), (0, 0, 1), (5, -1, 1)],
)
def test_pass_at_k_errors(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)
    with pytest.raises(ValueError):
        pass_at_k_array([n], [c], k)


def test_pass_at_k_monotone_in_k():
    for n, c in [(20, 1), (20, 5), (50, 10), (7, 3)]:
        vals = [pass_at_k(n, c, k) for k in range(1, n + 1)]
        assert all(b >= a - 1e-15 for a, b in zip(vals, vals[1:], strict=False))
        assert vals[0] == pytest.approx(c / n)
        assert vals[-1] == 1.0


def test_pass_at_k_array():
    n = [10, 10, 20, 5]
    c = [0, 3, 20, 4]
    out = pass_at_k_array(n, c, 2)
    assert out.dtype == np.float64 and out.shape == (4,)
    np.testing.assert_allclose(out, [exact(a, b, 2) for a, b in zip(n, c, strict=True)], rtol=1e-12)
    np.testing.assert_allclose(
        pass_at_k_array(10, np.array([0, 3, 10]), 2), [exact(10, x, 2) for x in (0, 3, 10)]
    )
    with pytest.raises(ValueError):
        pass_at_k_array([10, 10], [3, 11], 2)
    with pytest.raises(ValueError):
        pass_at_k_array([3, 10], [1, 1], 5)


def test_bootstrap_ci_contains_mean_and_shrinks():
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, size=30)
    big = rng.normal(1.0, 1.0, size=3000)
    p_s, lo_s, hi_s = bootstrap_ci(small, np.random.default_rng(0))
    p_b, lo_b, hi_b = bootstrap_ci(big, np.random.default_rng(0))
    assert p_s == pytest.approx(small.mean()) and p_b == pytest.approx(big.mean())
    assert lo_s < p_s < hi_s and lo_b < p_b < hi_b
    assert (hi_b - lo_b) < 0.3 * (hi_s - lo_s)  # width ~ 1/sqrt(m): ratio ~ 0.1
    # 95% CI for the mean of N(1, 1) with m=3000 has half-width ~ 1.96/sqrt(3000) ~ 0.036
    assert 0.05 < hi_b - lo_b < 0.1
    assert lo_b < 1.0 < hi_b


def test_bootstrap_ci_alpha_and_stat():
    x = np.random.default_rng(1).exponential(size=200)
    _, lo90, hi90 = bootstrap_ci(x, np.random.default_rng(0), alpha=0.10)
    _, lo99, hi99 = bootstrap_ci(x, np.random.default_rng(0), alpha=0.01)
    assert lo99 < lo90 < hi90 < hi99
    p, lo, hi = bootstrap_ci(x, np.random.default_rng(0), stat=np.median)
    assert p == pytest.approx(np.median(x)) and lo <= p <= hi
    # constant data: degenerate interval
    assert bootstrap_ci(np.full(10, 0.25), np.random.default_rng(0)) == (0.25, 0.25, 0.25)


def test_bootstrap_ci_empty_raises():
    with pytest.raises(ValueError):
        bootstrap_ci(np.array([]), np.random.default_rng(0))
