"""Per-problem diversity of the n samples drawn for ONE problem.

A program is a sequence of tokens (strings or ids); signatures are hashable behaviour fingerprints
(None for programs that failed to run).

- distinct:                    |{tuple(p)}|, number of distinct programs.
- distinct_correct:            |{tuple(p) : p correct}|.
- functional_classes:          |{sig(p) : p correct, sig(p) is not None}|.
- mean_pairwise_edit_distance: mean over pairs i<j of token-level Levenshtein(p_i, p_j); 0 if n < 2.
- distinct_n:                  |distinct n-grams over all samples| / |all n-grams|; 0 if none.
"""

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
    """Mean of Levenshtein(p_i, p_j) over all unordered pairs i<j; 0.0 when fewer than 2 samples."""
    pairs = list(combinations(programs, 2))
    if not pairs:
        return 0.0
    return sum(edit_distance(a, b) for a, b in pairs) / len(pairs)


def distinct_n(programs: Sequence[Program], n: int = 2) -> float:
    """|distinct n-grams over all samples| / |total n-grams|; 0.0 if there are no n-grams."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(p[i : i + n]) for p in programs for i in range(len(p) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def problem_diversity(
    programs: Sequence[Program], correct: Sequence[bool], signatures: Sequence[Hashable | None]
) -> dict[str, float]:
    """All per-problem diversity metrics for the n samples of one problem."""
    if not len(programs) == len(correct) == len(signatures):
        raise ValueError(
            f"length mismatch: programs={len(programs)}, correct={len(correct)}, signatures={len(signatures)}"
        )
    return {
        "distinct_programs": float(distinct(programs)),
        "distinct_correct_programs": float(distinct_correct(programs, correct)),
        "functional_classes_correct": float(functional_classes(signatures, correct)),
        "edit_distance": float(mean_pairwise_edit_distance(programs)),
        "distinct_2": float(distinct_n(programs, 2)),
    }
