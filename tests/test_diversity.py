import pytest

from spolab.eval.diversity import (
    distinct,
    distinct_correct,
    distinct_n,
    edit_distance,
    functional_classes,
    mean_pairwise_edit_distance,
    problem_diversity,
)

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
    }
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
