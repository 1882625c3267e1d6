"""A fresh clone reruns the whole study (docs/design.md §7): no committed file under results/ shadows an output
of the DAG, so `snakemake -n --cores 2` in a new `git clone` schedules every job from data to publish.

The clone is of HEAD: it holds only what is committed, so this tests the last commit, not uncommitted
edits of the working tree."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from spolab.config import load_config
from spolab.study import load_study

REPO = Path(__file__).resolve().parents[1]


def job_table(stdout: str) -> Counter:
    """Snakemake's "Job stats:" table of a dry run: rule -> number of jobs (the total row left out)."""
    lines = stdout.splitlines()
    start = lines.index("Job stats:") + 3  # the title, the header "job count", the dashes
    counts = Counter()
    for line in lines[start:]:
        rule, n = line.split()
        if rule == "total":
            return counts
        counts[rule] = int(n)
    raise AssertionError("no total row in the job table")


def job_blocks(stdout: str) -> list[tuple[str, dict[str, str]]]:
    """Every job a dry run lists: (rule, its indented `key: value` lines: output, wildcards, reason, …)."""
    jobs: list[tuple[str, dict[str, str]]] = []
    block = None  # the fields of the job being read
    for line in stdout.splitlines():
        head = re.fullmatch(r"(?:local)?rule (\w+):", line)
        if head:
            block = {}
            jobs.append((head[1], block))
        elif block is not None and line.startswith("    ") and ": " in line:
            key, _, value = line.strip().partition(": ")
            block[key] = value
        else:
            block = None  # a job's block ends at its first line that is not one of its fields
    return jobs


def test_fresh_clone_schedules_the_whole_study(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    env = {**os.environ, "PYTHONPATH": str(clone / "src"), "OMP_NUM_THREADS": "1"}  # the clone's spolab
    env.pop("SPOLAB_CONF_DIR", None)  # and so its conf/
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2"], cwd=clone, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    counts, jobs = job_table(res.stdout), job_blocks(res.stdout)
    assert sum(counts.values()) == len(jobs)  # the table and the job list agree

    specs = load_study("default", "default")
    rl = sorted("{run}-s{seed}".format(**dict(w.split("=") for w in b["wildcards"].split(", ")))
                for rule, b in jobs if rule == "rl")
    assert rl == sorted(s.name for s in specs)  # every RL run of the default study, once
    evals = sorted(b["wildcards"].removeprefix("name=") for rule, b in jobs if rule == "eval")
    assert evals == sorted(["sft", *(s.name for s in specs)])
    for rule in ["mlflow_init", "data", "sft", "q0", "sources", "bench", "export", "eval_table",
                 "report", "publish", "all"]:
        assert counts[rule] == 1, rule
    betas = load_config("exact", ["scale=default"]).betas  # the exact testbed: one job per β
    assert sorted(b["wildcards"].removeprefix("beta=") for rule, b in jobs if rule == "exact") == \
        sorted(f"{b:g}" for b in betas) and len(betas) == 2
    assert sum(n for r, n in counts.items() if r.startswith("figure_")) == 9

    # the committed copies are publish's outputs, every other output lives under results/default/
    outputs = [o for rule, b in jobs if "output" in b and rule != "publish" for o in b["output"].split(", ")]
    assert all(o.startswith("results/default/") for o in outputs), outputs
    published = next(b["output"].split(", ") for rule, b in jobs if rule == "publish")
    committed = subprocess.run(["git", "ls-files", "results"], cwd=clone, capture_output=True, text=True,
                               check=True).stdout.split()
    assert "results/README.md" in published and set(published) <= set(committed)
