"""Per-problem diversity (spolab.eval.diversity), its scoring and emission (spolab.eval.generate), and
whether the diversity columns measure diversity rather than the pass rate (analysis/common.py's
diversity_correlation), on constructed samples and on the committed export."""

import math
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from committed_export import NEW_PER_PROBLEM, REAL
from spolab.eval.diversity import (
    distinct,
    distinct_correct,
    distinct_n,
    edit_distance,
    effective_programs,
    functional_classes,
    mean_pairwise_edit_distance,
    per_solved,
    problem_diversity,
)
from spolab.eval.generate import score_samples
from spolab.tasks.problems import Problem

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
import common  # noqa: E402

A = ["sort", "|", "reverse"]
B = ["sort"]
C = ["reverse", "|", "sort"]


def test_distinct():
    assert distinct([A, list(A), B, C]) == 3
    assert distinct([B, B, B]) == 1
    assert distinct([]) == 0
    assert distinct([[1, 2], (1, 2), [2, 1]]) == 2  # lists and tuples compare as tuples


def test_distinct_correct():
    assert distinct_correct([A, A, B, C], [True, True, False, True]) == 2
    assert distinct_correct([A, B], [False, False]) == 0
    with pytest.raises(ValueError):
        distinct_correct([A, B], [True])


def test_functional_classes():
    sigs = ["s1", "s1", "s2", None, "s3"]
    ok = [True, True, True, True, False]
    assert functional_classes(sigs, ok) == 2  # s1, s2; None ignored, s3 incorrect
    assert functional_classes([None, None], [True, True]) == 0
    assert functional_classes([(1, 2), (1, 2), (2, 1)], [True] * 3) == 2


def test_edit_distance_hand_cases():
    assert edit_distance(A, B) == 2  # delete "|" and "reverse"
    assert edit_distance(B, A) == 2
    assert edit_distance(A, C) == 2  # substitute first and last
    assert edit_distance(A, A) == 0
    assert edit_distance([], A) == 3
    assert edit_distance(list("kitten"), list("sitting")) == 3
    assert edit_distance([1, 2, 3, 4], [2, 3, 4, 5]) == 2  # delete 1, insert 5


def test_mean_pairwise_edit_distance():
    # pairs: (A,B)=2, (A,C)=2, (B,C)=2 -> mean 2
    assert mean_pairwise_edit_distance([A, B, C]) == pytest.approx(2.0)
    # pairs: (A,A)=0, (A,B)=2, (A,B)=2 -> mean 4/3
    assert mean_pairwise_edit_distance([A, A, B]) == pytest.approx(4 / 3)
    assert mean_pairwise_edit_distance([A]) == 0.0
    assert mean_pairwise_edit_distance([]) == 0.0


def test_distinct_n():
    # bigrams: A -> (sort,|), (|,reverse); C -> (reverse,|), (|,sort); A again -> 2 repeats; B -> none
    # distinct 4 / total 6
    assert distinct_n([A, C, A, B], 2) == pytest.approx(4 / 6)
    # unigrams: 7 tokens, distinct {sort, |, reverse} = 3
    assert distinct_n([A, C, B], 1) == pytest.approx(3 / 7)
    assert distinct_n([B, B], 2) == 0.0
    assert distinct_n([], 2) == 0.0
    # trigrams of [1,1,1,1]: (1,1,1) twice -> 1/2
    assert distinct_n([[1, 1, 1, 1]], 3) == pytest.approx(0.5)


def test_problem_diversity():
    progs = [A, A, B, C]
    ok = [True, True, False, True]
    sigs = ["x", "x", None, "y"]
    d = problem_diversity(progs, ok, sigs)
    assert set(d) == {
        "distinct_programs",
        "distinct_correct_programs",
        "functional_classes_correct",
        "edit_distance",
        "distinct_2",
        "distinct_correct_per_solved",
        "functional_classes_per_solved",
        "effective_programs",
    }
    assert d["distinct_correct_per_solved"] == 2 and d["functional_classes_per_solved"] == 2
    # programs A, A, B, C: frequencies 1/2, 1/4, 1/4 -> H = 1.5 ln 2, exp(H) = 2^1.5
    assert d["effective_programs"] == pytest.approx(2**1.5)
    assert d["distinct_programs"] == 3
    assert d["distinct_correct_programs"] == 2
    assert d["functional_classes_correct"] == 2
    # pairs: AA 0, AB 2, AC 2, AB 2, AC 2, BC 2 -> 10/6
    assert d["edit_distance"] == pytest.approx(10 / 6)
    # bigrams: 2+2+0+2 = 6, distinct 4
    assert d["distinct_2"] == pytest.approx(4 / 6)
    assert all(isinstance(v, float) for v in d.values())
    with pytest.raises(ValueError):
        problem_diversity(progs, ok, sigs[:-1])
    unsolved = problem_diversity(progs, [False] * 4, [None] * 4)
    assert unsolved["distinct_correct_programs"] == 0 and unsolved["functional_classes_correct"] == 0
    assert math.isnan(unsolved["distinct_correct_per_solved"]) and math.isnan(unsolved["functional_classes_per_solved"])
    assert unsolved["effective_programs"] == d["effective_programs"]  # blind to correctness


def test_effective_programs():
    assert effective_programs([A] * 4) == pytest.approx(1.0)
    assert effective_programs([A, B, C, tuple(A)]) == pytest.approx(2**1.5)  # A twice: 1/2, 1/4, 1/4
    assert effective_programs([A, B, C, [1]]) == pytest.approx(4.0)  # n distinct: n
    assert effective_programs([A, A, B, B]) == pytest.approx(2.0)  # an even split over k programs: k
    p = [19 / 20, 1 / 20]  # one program with a stray sample: about 1.2, where distinct() says 2
    assert effective_programs([A] * 19 + [B]) == pytest.approx(math.exp(-sum(q * math.log(q) for q in p)))
    assert 1.2 < effective_programs([A] * 19 + [B]) < 1.25
    assert effective_programs([]) == 0.0


def test_per_solved():
    assert per_solved(3, [False, True]) == 3.0
    assert math.isnan(per_solved(0, [False, False])) and math.isnan(per_solved(0, []))


# ---------------------------------------------------------------- scoring, emission
def _problem(i: int) -> Problem:
    return Problem(id=f"test-{i:06d}", split="test", class_id=i, program="sort", examples=[], tests=[])


SOLVERS = [["sort"], ["sort", "|", "reverse", "|", "reverse"], ["reverse", "|", "sort"], ["sort", "|", "sort"],
           ["sort", "|", "take", "9"]]  # programs that "solve" a constructed problem (the labels below say so)


def constructed_samples(n_problems: int = 200, n: int = 20, seed: int = 0) -> tuple[list[Problem], list[dict]]:
    """n labelled samples per problem: a success rate drawn per problem, correct samples spread over a
    number of solvers drawn independently of it, wrong samples over a pool whose size is drawn too.
    The knobs are independent, as they are for a policy: how often it succeeds, how many correct
    programs it knows, how much it scatters."""
    rng = random.Random(seed)
    problems, samples = [_problem(i) for i in range(n_problems)], []
    for p in problems:
        rate, k, wrong = rng.choice([0, 0.05, 0.15, 0.4, 0.8]), rng.randint(1, len(SOLVERS)), rng.randint(1, 12)
        for j in range(n):
            ok = rng.random() < rate
            prog = SOLVERS[rng.randrange(k)] if ok else ["head", "|", "map", str(rng.randrange(wrong))]
            samples.append({"problem_id": p.id, "sample": j, "program": " ".join(prog), "correct": ok,
                            "signature": repr(tuple(prog[:1])) if ok else None, "n_tokens": len(prog),
                            "entropy": 0.3 * len(prog) * (1 + wrong / 12), "error": None})
    return problems, samples


def test_score_samples_emits_the_per_solved_and_effective_metrics():
    problems, samples = constructed_samples()
    metrics, pp = score_samples(problems, samples, ks=(1, 10), prefix="test")
    n_correct = np.array(pp["n_correct"])
    solved = n_correct > 0
    assert metrics["test/n_solved"] == solved.sum() and 0 < solved.sum() < len(problems)
    for key in NEW_PER_PROBLEM:
        assert len(pp[key]) == len(problems)
        assert metrics[f"test/{key}_ci_lo"] <= metrics[f"test/{key}"] <= metrics[f"test/{key}_ci_hi"]
    per_solved_ = np.array([np.nan if v is None else v for v in pp["distinct_correct_per_solved"]])
    assert all(v is None for v, ok in zip(pp["distinct_correct_per_solved"], solved) if not ok)  # JSON null
    assert metrics["test/distinct_correct_per_solved"] == pytest.approx(np.mean(per_solved_[solved]))
    # the unconditioned mean is the per-solved mean times the share solved: that is how it tracks pass@k
    assert metrics["test/distinct_correct_programs"] == pytest.approx(
        metrics["test/distinct_correct_per_solved"] * solved.mean())
    assert all(1 <= v <= 20 for v in pp["effective_programs"])


def test_score_samples_with_nothing_solved_gives_nan_not_an_error():
    problems, samples = constructed_samples(n_problems=5)
    for s_ in samples:
        s_["correct"], s_["signature"] = False, None
    metrics, pp = score_samples(problems, samples, ks=(1,), prefix="ood")
    assert metrics["ood/n_solved"] == 0 and math.isnan(metrics["ood/distinct_correct_per_solved"])
    assert pp["functional_classes_per_solved"] == [None] * 5 and metrics["ood/effective_programs"] >= 1


# ---------------------------------------------------------------- diversity is not pass@k again
def _as_rows(pp: dict) -> pd.DataFrame:
    return pd.DataFrame({k: [np.nan if v is None else v for v in vs] for k, vs in pp.items()})


def test_no_diversity_column_is_pass_at_10_again_on_constructed_samples():
    problems, samples = constructed_samples()
    r = common.diversity_correlation(_as_rows(score_samples(problems, samples, ks=(10,))[1]))
    assert set(common.DIVERSITY) <= set(r.index)
    assert not (r[list(common.DIVERSITY)].abs() > 0.95).any(), r.to_dict()  # NaN (constant): no correlation
    # ... while the unconditioned count is mostly the pass rate: here, with its solvers' count drawn
    # independently of the success rate, it still correlates more than any conditioned column
    assert r["distinct_correct_programs"] > r[list(common.DIVERSITY)].abs().max(), r.to_dict()


def test_a_collapsed_policy_makes_the_old_counts_pass_at_k_and_leaves_the_new_ones_undefined():
    """One correct program per solved problem, n = k = 10 (validation): the functional classes equal
    pass@10 on every problem (r = 1), as measured on the committed study; the per-solved counts are 1
    on every solved problem, a constant, so their correlation is undefined (NaN), not 1."""
    problems, samples = constructed_samples(n_problems=100, n=10)
    for s_ in samples:
        if s_["correct"]:
            s_["program"], s_["signature"] = "sort", "('sort',)"
    r = common.diversity_correlation(_as_rows(score_samples(problems, samples, ks=(10,))[1]))
    assert r["functional_classes_correct"] == pytest.approx(1.0)
    assert np.isnan(r["functional_classes_per_solved"]) and np.isnan(r["distinct_correct_per_solved"])
    assert abs(r["effective_programs"]) <= 0.95




def test_no_diversity_column_is_pass_at_10_again_on_the_committed_export():
    pp = pd.read_csv(REAL / "eval_per_problem.csv")
    present = [c for c in common.DIVERSITY if c in pp]
    assert set(NEW_PER_PROBLEM) & set(present), f"none of {NEW_PER_PROBLEM} in the committed export"
    r = common.diversity_correlation(pp, present)
    assert not (r.abs() > 0.95).any(), r.to_dict()  # NaN: a column constant over the solved problems


def test_mean_pairwise_edit_distance_equals_the_mean_over_every_sample_pair():
    """The distinct-pair sum weighted by counts equals the plain mean over all n(n-1)/2 sample pairs."""
    import random
    from itertools import combinations

    rng = random.Random(0)
    vocab = ["sort", "|", "reverse", "map", "filter"]
    for _ in range(200):
        pool = [[rng.choice(vocab) for _ in range(rng.randint(0, 5))] for _ in range(rng.randint(1, 4))]
        progs = [rng.choice(pool) for _ in range(rng.randint(0, 12))]
        pairs = list(combinations(progs, 2))
        plain = sum(edit_distance(a, b) for a, b in pairs) / len(pairs) if pairs else 0.0
        assert mean_pairwise_edit_distance(progs) == plain
