"""Problems, splits and determinism of ``python -m spolab.data`` (docs/design.md §3)."""

import hashlib
import random
import statistics

from conftest import smoke_cfg
from spolab import data
from spolab.config import load_config
from spolab.tasks import listdsl as dsl
from spolab.tasks.io import load_split
from spolab.tasks.problems import has_dead_step, iter_problems, nontrivial_outputs, sample_classes


def _digest(d):
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_same_seed_byte_identical_files(tmp_path, smoke_data):
    cfg = smoke_cfg("data", tmp_path, f"out_dir={tmp_path}/again")
    data.run(cfg)
    assert _digest(tmp_path / "again") == _digest(smoke_data)
    other = smoke_cfg("data", tmp_path, f"out_dir={tmp_path}/seed1", "seed=1")
    data.run(other)
    assert (tmp_path / "seed1" / "sft.jsonl").read_bytes() != (smoke_data / "sft.jsonl").read_bytes()


def test_split_rules(smoke_data):
    splits = {s: load_split(smoke_data, s) for s in ["sft", "rl", "val", "test", "ood"]}
    prompts = {s: [str(p.examples) for p in v] for s, v in splits.items()}
    # no prompt appears twice, within a split or across any two splits
    everything = [x for v in prompts.values() for x in v]
    assert len(everything) == len(set(everything))
    classes = {s: {p.class_id for p in v} for s, v in splits.items()}
    for s in ["sft", "rl", "val", "test"]:
        assert not classes["ood"] & classes[s], f"an ood class leaked into {s}"
    for s in ["rl", "val", "test"]:
        assert classes[s] <= classes["sft"], f"{s} has classes sft never saw"
    for v in splits.values():
        for p in v:
            assert len(p.examples) == 3 and len(p.tests) >= 10
            assert dsl.execute(p.program, p.all_tests()).success  # the generator solves its problem
            assert all(inp != out for inp, out in p.examples)


def test_trivial_problems_rejected():
    ins = [(1, 2, 3), (4, 5, 6), (7, 8, 9), (1, 1, 2), (0, 3, 5)]
    assert nontrivial_outputs(ins, [5] * 5, 4) == "too few distinct outputs"
    assert nontrivial_outputs(ins, list(ins), 4) == "outputs equal inputs"
    assert nontrivial_outputs(ins, [(1,), (), (2,), (3,), (4,)], 4) == "empty output"
    assert nontrivial_outputs(ins, [1, 2, None, 3, 4], 4) == "error"
    assert nontrivial_outputs(ins, [6, 15, 24, 4, 8], 4) is None
    assert has_dead_step(dsl.parse("sort | sort | head"))
    assert not has_dead_step(dsl.parse("sort | head"))


def test_default_task_has_enough_solvers():
    """docs/design.md §3: the median problem has >= 5 solvers (programs of <= 4 primitives)."""
    task = load_config("data").task
    classes = sample_classes(random.Random("0-classes"), task.n_classes, task.max_prims)
    stream = iter_problems(random.Random(7), "test", classes, list(range(len(classes))), 3, 10)
    counts = [len(dsl.enumerate_solvers(next(stream).all_tests(), task.solver_max_len)) for _ in range(60)]
    assert min(counts) >= 1  # the generating program itself (it has no dead step)
    assert statistics.median(counts) >= 5
