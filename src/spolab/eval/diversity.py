"""Per-problem diversity of the n samples drawn for ONE problem.

A program is a sequence of tokens (strings or ids); signatures are hashable behaviour fingerprints
(None for programs that failed to run).

- distinct:                    |{tuple(p)}|, number of distinct programs.
- distinct_correct:            |{tuple(p) : p correct}|.
- functional_classes:          |{sig(p) : p correct, sig(p) is not None}|.
- mean_pairwise_edit_distance: mean over pairs i<j of token-level Levenshtein(p_i, p_j); 0 if n < 2.
- distinct_n:                  |distinct n-grams over all samples| / |all n-grams|; 0 if none.
- effective_programs:          exp(H), H the Shannon entropy of the empirical distribution of
                               distinct programs among all n samples (see its docstring).
- per solved problem:          ``distinct_correct`` and ``functional_classes`` of a problem with at
                               least one correct sample, NaN for an unsolved problem (so a mean over
                               problems that skips NaN is a mean over solved problems).

Why the per-solved and effective counts: ``distinct_correct`` and ``functional_classes`` are 0 on
every unsolved problem, and on this task a solved problem mostly has one correct program, so their
mean over problems is dominated by the share of solved problems, i.e. by pass@k (measured on the
committed default study: per problem, ``functional_classes_correct`` equals "any sample correct" 99 %
of the time, and its mean equals val pass@10 in 116 of 117 evaluations). Conditioning on a solved
problem removes that term; ``effective_programs`` does not look at correctness at all.
"""

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from itertools import combinations

Program = Sequence[Hashable]


def distinct(programs: Sequence[Program]) -> int:
    """Number of distinct programs, |{tuple(p)}|."""
    return len({tuple(p) for p in programs})


def distinct_correct(programs: Sequence[Program], correct: Sequence[bool]) -> int:
    """Number of distinct correct programs, |{tuple(p) : correct(p)}|."""
    if len(programs) != len(correct):
        raise ValueError(f"len(programs)={len(programs)} != len(correct)={len(correct)}")
    return len({tuple(p) for p, ok in zip(programs, correct, strict=True) if ok})


def functional_classes(signatures: Sequence[Hashable | None], correct: Sequence[bool]) -> int:
    """Number of distinct behaviour signatures among correct samples (None ignored)."""
    if len(signatures) != len(correct):
        raise ValueError(f"len(signatures)={len(signatures)} != len(correct)={len(correct)}")
    return len({s for s, ok in zip(signatures, correct, strict=True) if ok and s is not None})


def edit_distance(a: Program, b: Program) -> int:
    """Token-level Levenshtein distance (insert / delete / substitute each cost 1)."""
    a, b = list(a), list(b)
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ta in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, tb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ta != tb))
        prev = cur
    return prev[-1]


def mean_pairwise_edit_distance(programs: Sequence[Program]) -> float:
    """Mean of Levenshtein(p_i, p_j) over all unordered pairs i<j; 0.0 when fewer than 2 samples.

    With c_u the number of samples that are program u, the sum over sample pairs is
    Σ_{u<v} c_u c_v · Levenshtein(u, v) (pairs of equal programs add 0), so each pair of *distinct*
    programs is computed once: the same integers summed, a fraction of the work when samples repeat."""
    n = len(programs)
    if n < 2:
        return 0.0
    counts = Counter(tuple(p) for p in programs)
    total = sum(counts[a] * counts[b] * edit_distance(a, b) for a, b in combinations(counts, 2))
    return total / (n * (n - 1) // 2)


def distinct_n(programs: Sequence[Program], n: int = 2) -> float:
    """|distinct n-grams over all samples| / |total n-grams|; 0.0 if there are no n-grams."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(p[i : i + n]) for p in programs for i in range(len(p) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def effective_programs(programs: Sequence[Program]) -> float:
    """Effective number of distinct programs among all n samples of a problem (the Hill number of
    order 1): with c_u the number of samples that are program u,

        H = −Σ_u (c_u/n) log(c_u/n)  (nats),   effective_programs = exp(H)  ∈ [1, n];  0 for no samples.

    It is n when every sample is a different program, 1 when all n are the same, and k when the
    samples split evenly over k programs. Why this sample-level measure: it depends on how the n
    samples spread over programs only, never on which are correct, so it is not built from the
    correct count c as pass@k is (the correct-program counts are 0 whenever c is, and mostly 1
    otherwise); it is
    defined on every problem (unlike the mean pairwise edit distance among correct samples, which
    needs two correct samples, i.e. a solved problem, and measures token-level spelling rather than
    how many different programs the policy puts mass on); and, unlike the plain distinct count, it
    weighs programs by their frequency, so a policy that puts 19 of 20 samples on one program and a
    stray sample elsewhere counts as ≈ 1.2 programs, not 2. It is the plug-in estimate of exp of the
    entropy of π's distribution over whole programs, biased low for small n; runs compared share n.
    """
    n = len(programs)
    if n == 0:
        return 0.0
    counts = Counter(tuple(p) for p in programs).values()
    return math.exp(-sum(c / n * math.log(c / n) for c in counts))


def per_solved(value: float, correct: Sequence[bool]) -> float:
    """``value`` for a problem with at least one correct sample, NaN for an unsolved one."""
    return float(value) if any(correct) else math.nan


def problem_diversity(
    programs: Sequence[Program], correct: Sequence[bool], signatures: Sequence[Hashable | None]
) -> dict[str, float]:
    """All per-problem diversity metrics for the n samples of one problem (the per-solved ones NaN
    when no sample is correct)."""
    if not len(programs) == len(correct) == len(signatures):
        raise ValueError(
            f"length mismatch: programs={len(programs)}, correct={len(correct)}, signatures={len(signatures)}"
        )
    correct_programs = float(distinct_correct(programs, correct))
    classes = float(functional_classes(signatures, correct))
    return {
        "distinct_programs": float(distinct(programs)),
        "distinct_correct_programs": correct_programs,
        "functional_classes_correct": classes,
        "edit_distance": float(mean_pairwise_edit_distance(programs)),
        "distinct_2": float(distinct_n(programs, 2)),
        "distinct_correct_per_solved": per_solved(correct_programs, correct),
        "functional_classes_per_solved": per_solved(classes, correct),
        "effective_programs": effective_programs(programs),
    }
