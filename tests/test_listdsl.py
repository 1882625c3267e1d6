"""DSL semantics: a hand-written case for every primitive, parsing, failures as values."""

import pytest

from spolab.tasks import listdsl as dsl

X = (3, 1, 4, 1, 5)

# (primitive, input, expected output) computed by hand
CASES = [
    ("sort", X, (1, 1, 3, 4, 5)),
    ("sortdesc", X, (5, 4, 3, 1, 1)),
    ("reverse", X, (5, 1, 4, 1, 3)),
    ("map + 1", X, (4, 2, 5, 2, 6)),
    ("map + 2", X, (5, 3, 6, 3, 7)),
    ("map + 3", X, (6, 4, 7, 4, 8)),
    ("map * 2", X, (6, 2, 8, 2, 10)),
    ("map * 3", X, (9, 3, 12, 3, 15)),
    ("filter even", X, (4,)),
    ("filter odd", X, (3, 1, 1, 5)),
    ("filter > 4", X, (5,)),
    ("filter < 5", X, (3, 1, 4, 1)),
    ("take 1", X, (3,)),
    ("take 2", X, (3, 1)),
    ("take 3", X, (3, 1, 4)),
    ("drop 1", X, (1, 4, 1, 5)),
    ("drop 2", X, (4, 1, 5)),
    ("drop 3", X, (1, 5)),
    ("cumsum", X, (3, 4, 8, 9, 14)),
    ("dedup", X, (3, 1, 4, 5)),
    ("head", X, 3),
    ("last", X, 5),
    ("sum", X, 14),
    ("max", X, 5),
    ("min", X, 1),
    ("count", X, 5),
]


def test_every_primitive_has_a_case():
    assert {c[0] for c in CASES} == {p.name for p in dsl.PRIMITIVES}


@pytest.mark.parametrize("name,xs,expected", CASES)
def test_primitive(name, xs, expected):
    assert dsl.run(dsl.parse(name), xs) == expected


def test_pipelines():
    assert dsl.run(dsl.parse("sort | map + 1 | take 2"), (3, 1, 4)) == (2, 4)
    assert dsl.run(dsl.parse("filter odd | sum"), (3, 1, 4)) == 4
    assert dsl.run(dsl.parse("sort | reverse"), X) == dsl.run(dsl.parse("sortdesc"), X)
    assert dsl.run(dsl.parse("take 2 | count"), ()) == 0


@pytest.mark.parametrize("text", ["sort", "map + 1 | filter even | last", "cumsum | dedup | take 3 | max"])
def test_parse_print_round_trip(text):
    prog = dsl.parse(text)
    assert dsl.to_text(prog) == text
    assert dsl.parse(dsl.to_tokens(prog)) == prog


@pytest.mark.parametrize(
    "bad",
    ["", "sorted", "map + 9", "sort |", "| sort", "sort || reverse", "head | sort", "map +", "take 2 2", "<eos> sort"],
)
def test_parse_rejects_garbage(bad):
    with pytest.raises(dsl.DSLError):
        dsl.parse(bad)


def test_runtime_errors():
    with pytest.raises(dsl.DSLError, match="empty"):
        dsl.run(dsl.parse("filter > 4 | head"), (1, 2))
    with pytest.raises(dsl.DSLError, match="MAX_VALUE"):
        dsl.run(dsl.parse("map * 3 | map * 3"), (9,))
    with pytest.raises(dsl.DSLError, match="step limit"):
        dsl.run(dsl.parse("sort | reverse | sort"), tuple(range(6)), max_steps=10)


def test_execute_never_raises_and_scores():
    tests = [([3, 1, 4], [1, 3, 4]), ([2, 0], [0, 2])]
    assert dsl.execute("sort", tests).success
    r = dsl.execute("map + 1", tests)
    assert (r.passed, r.total, r.success) == (0, 2, False)
    assert r.reward("binary") == 0.0
    half = dsl.execute("sort", [([3, 1, 4], [1, 3, 4]), ([2, 0], [2, 0])])
    assert half.reward("fraction") == 0.5 and half.reward("binary") == 0.0
    for garbage in ["", "sort sort", "x 1 2", "head | head", "filter > 4 | head", "1 2 3 | ;"]:
        res = dsl.execute(garbage, tests)
        assert not res.success and res.reward() == 0.0 and res.error
    with pytest.raises(ValueError, match="valid"):
        r.reward("bogus")


def test_enumerate_solvers():
    tests = [([3, 1, 4], [4, 3, 1]), ([2, 0, 7, 5], [7, 5, 2, 0]), ([1, 2, 3], [3, 2, 1])]
    sols = [dsl.to_text(p) for p in dsl.enumerate_solvers(tests, max_len=2)]
    assert "sortdesc" in sols and "sort | reverse" in sols and "reverse | sortdesc" in sols
    assert "sortdesc | sortdesc" not in sols  # dead step
    for s in sols:
        assert dsl.execute(s, tests).success
    # every solver of length <= 2, checked by brute force over all pairs
    brute = set()
    for a in range(len(dsl.PRIMITIVES)):
        for prog in [(a,)] + [(a, b) for b in range(len(dsl.PRIMITIVES))]:
            text = dsl.to_text(prog)
            if dsl.execute(text, tests).success:
                states = [tuple(tuple(x) for x, _ in tests)] + [
                    tuple(dsl.run(prog[: k + 1], x) for x, _ in tests) for k in range(len(prog))
                ]
                if all(states[i] != states[i + 1] for i in range(len(prog))):
                    brute.add(text)
    assert set(sols) == brute
