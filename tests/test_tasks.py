"""The task interface (spolab.tasks.base) through the entry points: ``task=listdsl`` behaves as the
miniature always did, and ``task=humaneval`` / ``task=codecontests`` build their splits with
``python -m spolab.data``, load back as code problems, run in the sandbox and give rewards, pass@k and
the diversity metrics; bad task configs fail with the key that is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import smoke_cfg
from spolab import data
from spolab.errors import ConfigError
from spolab.eval.generate import execute, score_samples
from spolab.tasks import listdsl as dsl
from spolab.tasks.base import TOO_LONG, get_task, task_class, task_of, task_splits
from spolab.tasks.code.problems import CodeProblem
from spolab.tasks.io import load_split
from spolab.tasks.problems import Problem

FIXTURE = Path(__file__).parent / "fixtures" / "codecontests" / "mini.jsonl"


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown task 'nope'; valid: \['codecontests', 'humaneval', 'listdsl'\]"):
        task_class("nope")


def test_listdsl_task_scores_as_the_dsl_does(smoke_data):
    problems = load_split(smoke_data, "test")[:20]
    task = task_of(problems)
    assert task.name == "listdsl" and all(isinstance(p, Problem) for p in problems)
    programs = [p.program for p in problems[:10]] + ["sort | nonsense"] * 5 + [None] * 5
    outs = task.execute(problems, programs)
    for p, prog, o in zip(problems, programs, outs):
        if prog is None:
            assert (o.success, o.passed, o.error) == (False, 0, TOO_LONG)
            continue
        ref = dsl.execute(prog, p.all_tests())
        assert (o.success, o.reward("binary"), o.reward("fraction")) == (ref.success, ref.reward("binary"),
                                                                          ref.reward("fraction"))
        assert (o.signature is not None) == o.success
    assert task.solutions(problems[0]) == [problems[0].program]


def test_codecontests_from_files_through_the_data_entry_point(tmp_path):
    cfg = smoke_cfg("data", tmp_path, "task=codecontests", f"task.paths={{rl: {FIXTURE}, val: {FIXTURE}, test: {FIXTURE}}}",
                    f"out_dir={tmp_path}/data")
    meta = data.run(cfg)
    assert meta["sizes"] == {"rl": 9, "val": 9, "test": 9} and not (tmp_path / "data" / "tokenizer").exists()
    problems = load_split(tmp_path / "data", "test")
    assert all(isinstance(p, CodeProblem) and p.kind == "stdio" and p.split == "test" for p in problems)
    task = task_of(problems)
    assert task.name == "codecontests" and "standard input" in task.prompt(problems[0])
    # every reference passes; the same program answering nothing fails; an unfinished response is "too long"
    refs = [task.solutions(p)[0] for p in problems]
    outs = task.execute(problems, refs)
    assert all(o.success and o.reward("fraction") == 1.0 for o in outs)
    silent = task.execute(problems[:3], ["```python\nprint()\n```"] * 3)
    assert not any(o.success for o in silent) and all(o.reward("fraction") < 1 for o in silent)
    assert task.execute(problems[:1], [None])[0].error == TOO_LONG
    # the evaluation path: samples -> execute -> pass@k and diversity
    samples = [{"problem_id": p.id, "sample": j, "program": prog, "n_tokens": 10, "finished": True, "logprob": -1.0,
                "entropy": 1.0} for p in problems for j, prog in enumerate([task.solutions(p)[0], "```python\nprint(0)\n```"])]
    execute(problems, samples, "fraction", task)
    metrics, per_problem = score_samples(problems, samples, ks=(1, 2), prefix="test")
    assert metrics["test/pass@1"] == pytest.approx(0.5) and metrics["test/pass@2"] == pytest.approx(1.0)
    assert metrics["test/functional_classes_per_solved"] == pytest.approx(1.0)


def test_codecontests_reads_one_split_of_a_saved_datasetdict(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:6]), "test": datasets.Dataset.from_list(rows[6:])}
                         ).save_to_disk(str(tmp_path / "cc"))
    cfg = smoke_cfg("data", tmp_path, "task=codecontests",
                    f"task.paths={{rl: {{path: {tmp_path}/cc, split: train}}, test: {{path: {tmp_path}/cc, split: test}}}}",
                    f"out_dir={tmp_path}/data")
    assert data.run(cfg)["sizes"] == {"rl": 6, "test": 3}


def test_the_easy_code_set_is_the_miniature_as_stdio_tasks(tmp_path):
    cfg = smoke_cfg("data", tmp_path, "task=codecontests",
                    "task.from_dsl={n_classes: 20, max_prims: 2, splits: {sft: 0, rl: 12, val: 4, test: 6, ood: 0}}",
                    f"out_dir={tmp_path}/data")
    assert data.run(cfg)["sizes"] == {"rl": 12, "val": 4, "test": 6}
    assert task_splits(cfg.task) == ["rl", "val", "test"]
    problems = load_split(tmp_path / "data", "rl")
    task = get_task(cfg.task)
    assert all(o.success for o in task.execute(problems, [task.solutions(p)[0] for p in problems]))


def test_humaneval_splits_every_problem_once(tmp_path):
    cfg = smoke_cfg("data", tmp_path, "task=humaneval", f"out_dir={tmp_path}/data")
    assert data.run(cfg)["sizes"] == {"rl": 82, "val": 16, "test": 66}
    ids = [p.id for s in ("rl", "val", "test") for p in load_split(tmp_path / "data", s)]
    assert len(ids) == len(set(ids)) == 164
    p = load_split(tmp_path / "data", "val")[0]
    assert p.kind == "function" and p.entry_point in get_task(cfg.task).prompt(p)


@pytest.mark.parametrize("override, why", [
    ("task.fractions.val=0.3", "must sum to 1"),
    ("task.reward=partial", "task.reward='partial': must be one of"),
    ("task.prompt_template=no-slot", "must contain {prompt}"),
    ("task.max_problems={train: 3}", "unknown split"),
])
def test_bad_humaneval_configs_name_their_key(tmp_path, override, why):
    cfg = smoke_cfg("data", tmp_path, "task=humaneval", override, f"out_dir={tmp_path}/data")
    with pytest.raises(ConfigError, match=why):
        data.run(cfg)


def test_codecontests_without_data_says_where_to_put_it(tmp_path):
    with pytest.raises(ConfigError, match="reads its splits from disk"):
        data.run(smoke_cfg("data", tmp_path, "task=codecontests", f"out_dir={tmp_path}/data"))
    with pytest.raises(ConfigError, match="no such file or folder"):
        data.run(smoke_cfg("data", tmp_path, "task=codecontests", "task.paths={rl: /nonexistent/cc.jsonl}",
                           f"out_dir={tmp_path}/data"))


def test_real_smoke_dag_runs_spo_and_ppo_on_humaneval(tmp_path):
    """`snakemake --cores 2 --config scale=real_smoke` (dry run): SmolLM2 on HumanEval, SFT off, SPO and PPO
    at one seed and SPO + expert (the canonical solutions), SFT and the RL policies evaluated on test only
    (HumanEval has no ood split), no tokenizer."""
    from test_devices import dry_run_jobs

    jobs = dry_run_jobs("real_smoke", tmp_path)
    by_rule: dict[str, list[dict]] = {}
    for rule, block in jobs:
        by_rule.setdefault(rule, []).append(block)
    assert sorted(b["wildcards"] for b in by_rule["rl"]) == ["run=ppo, seed=0", "run=spo, seed=0",
                                                                  "run=spo_expert, seed=0"]
    assert sorted(b["wildcards"] for b in by_rule["eval"]) == ["name=ppo-s0", "name=sft", "name=spo-s0",
                                                               "name=spo_expert-s0"]
    data_out = by_rule["data"][0]["output"]
    assert "rl.jsonl" in data_out and "ood.jsonl" not in data_out and "tokenizer" not in data_out
    from spolab.config import load_config

    assert task_splits(load_config("data", ["scale=real_smoke"]).task) == ["rl", "val", "test"]  # eval: test only


def test_q0_of_a_partial_credit_reward_is_the_monte_carlo_soft_value(tmp_path):
    """q0.json records the reference rewards; with task.reward=fraction SPO's Q̂0 is β log mean exp(r/β) of
    them (computed here by hand), and with binary rewards the same file gives the success-count formula."""
    import math

    from spolab.algos.q0 import load_q0

    beta = 0.1
    path = tmp_path / "q0.json"
    path.write_text(json.dumps({"n_ref": 4, "successes": {"a": 1, "b": 0},
                                "rewards": {"a": [1.0, 0.5, 0.0, 0.25], "b": [0.0, 0.0, 0.0, 0.0]}}))
    q = load_q0(path, beta, "squared", "plain", "fraction")
    want_a = beta * math.log(sum(math.exp(r / beta) for r in [1.0, 0.5, 0.0, 0.25]) / 4)
    assert q["a"] == pytest.approx(want_a, rel=1e-6) and q["b"] == pytest.approx(0.0, abs=1e-7)
    binary = load_q0(path, beta, "squared", "plain", "binary")
    assert binary["a"] == pytest.approx(1 + beta * math.log(0.25 + 0.75 * math.exp(-1 / beta)), rel=1e-6)
    with pytest.raises(ConfigError, match="plain Monte-Carlo"):
        load_q0(path, beta, "squared", "shrunk", "fraction")
    path.write_text(json.dumps({"n_ref": 4, "successes": {"a": 1}}))
    with pytest.raises(ConfigError, match="rerun"):
        load_q0(path, beta, "squared", "plain", "fraction")


def test_bench_on_a_code_task_needs_no_task_tokenizer(tmp_path):
    """A code task's data folder has no tokenizer (the model brings its own): the bench's input check must
    not ask for one (it did, and stopped the real_smoke DAG at its bench job)."""
    from spolab.validate import validate

    cfg = smoke_cfg("data", tmp_path, "task=humaneval", f"out_dir={tmp_path}/data")
    data.run(cfg)
    bench = smoke_cfg("bench", tmp_path, "task=humaneval", f"data_dir={tmp_path}/data", "sft_dir=null")
    validate(bench, "bench")  # raised MissingInput "... tokenizer does not exist" before
    listdsl = smoke_cfg("bench", tmp_path, f"data_dir={tmp_path}/data", "sft_dir=null")
    with pytest.raises(ConfigError, match="tokenizer"):
        validate(listdsl, "bench")


def test_every_task_checks_its_own_config_and_names_its_splits():
    """spolab.validate.check_task and the Snakefile's data outputs ask the task class (no branch on task
    names outside the task): each registered task answers ``split_names`` and ``check_config``, and the
    easy code set's miniature is checked as a list-DSL group under ``task.from_dsl``."""
    from omegaconf import OmegaConf

    from spolab.config import load_config
    from spolab.tasks.base import TASKS, Task
    from spolab.validate import check_task

    task_class("listdsl")  # imports every task module
    for name, cls in TASKS.items():
        assert cls.split_names is not Task.split_names and cls.check_config is not Task.check_config, name
    easy = load_config("data", ["task=codecontests", "task.from_dsl={n_classes: 20, max_prims: 2}"]).task
    check_task(easy)
    assert task_splits(easy) == ["sft", "rl", "val", "test", "ood"]  # conf/task/listdsl.yaml's order
    with pytest.raises(ConfigError, match=r"task.from_dsl.n_classes=10000: must be <= \d+"):
        check_task(load_config("data", ["task=codecontests", "task.from_dsl={n_classes: 10000, max_prims: 2}"]).task)
    with pytest.raises(ConfigError, match=r"task.name='nope': unknown task 'nope'; valid: \['codecontests'"):
        check_task(OmegaConf.create({"name": "nope"}))
