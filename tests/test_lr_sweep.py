"""analysis/lr_sweep.py: the rule that picks every setting's learning rate, on curves whose answer is
worked out by hand, and the committed table against the conf files that cite it."""

from __future__ import annotations

import doctest
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "analysis"))
import lr_sweep  # noqa: E402


def curves(setting: str, lr: float, seed: int, val: list[float]) -> pd.DataFrame:
    steps = np.arange(len(val)) * 12
    return pd.DataFrame({"setting": setting, "lr": lr, "seed": seed, "step": steps, "val/pass@1": val,
                         "val/pass@10": 0.5, "val/kl_ref": steps / 100})


def test_docstring_examples_run():
    result = doctest.testmod(lr_sweep)
    assert result.attempted >= 3 and result.failed == 0


def test_rule_scores_the_last_three_points_over_seeds_and_breaks_ties_to_the_smaller_lr():
    c = pd.concat([
        # spo 1e-5: last three 0.2, 0.3, 0.4 -> 0.3 (seed 0); 0.1, 0.1, 0.1 -> 0.1 (seed 1): score 0.2
        curves("spo", 1e-5, 0, [0.9, 0.9, 0.2, 0.3, 0.4]), curves("spo", 1e-5, 1, [0.9, 0.9, 0.1, 0.1, 0.1]),
        # spo 1e-4: 0.25 flat: score 0.25, the best by 0.05
        curves("spo", 1e-4, 0, [0.0, 0.25, 0.25, 0.25, 0.25]),
        # spo half_online: 3e-5 scores 0.298, 1e-4 scores 0.300: within 0.005, the smaller wins
        curves("spo half_online", 3e-5, 0, [0.1, 0.298, 0.298, 0.298]),
        curves("spo half_online", 1e-4, 0, [0.1, 0.3, 0.3, 0.3]),
        # ppo: a higher early peak does not count, only the last three points
        curves("ppo", 3e-5, 0, [0.1, 0.5, 0.2, 0.2, 0.2]), curves("ppo", 1e-5, 0, [0.1, 0.1, 0.18, 0.18, 0.18]),
    ])
    t = lr_sweep.sweep_table(c).set_index(["setting", "lr"])
    assert t.loc[("spo", 1e-5), "score"] == pytest.approx(0.2)
    assert t.loc[("spo", 1e-5), "seeds"] == 2
    assert t.loc[("spo", 1e-5), "final_pass1"] == pytest.approx(0.25)  # (0.4 + 0.1) / 2
    chosen = {k for k, v in t.chosen.items() if v}
    assert chosen == {("spo", 1e-4), ("spo half_online", 3e-5), ("ppo", 3e-5)}


def test_committed_table_is_what_the_confs_set():
    """Every ✔ row of results/tables/lr_sweep_default.md is the lr the default study trains with:
    conf/algo/<algo>.yaml for an online setting, the entry's algo.lr override otherwise."""
    text = (ROOT / "results/tables/lr_sweep_default.md").read_text()
    rows = re.findall(r"^\| ([a-z_ ]+) \| ([0-9.e-]+) \|.*\| ✔ \|$", text, flags=re.M)
    assert rows, "no chosen row in the committed sweep table"
    study = yaml.safe_load((ROOT / "conf/study/default.yaml").read_text())["runs"]
    for name, lr in rows:
        algo, _, mix = name.partition(" ")
        if not mix:
            assert yaml.safe_load((ROOT / f"conf/algo/{algo}.yaml").read_text())["lr"] == pytest.approx(float(lr)), name
            continue
        entries = [e for e in study.values() if f"algo={algo}" in e["overrides"].split()
                   and f"data_mix={mix}" in e["overrides"].split() and e["group"] == "main"]
        assert entries, f"the sweep chose an lr for {name!r}, which no main entry of the default study runs"
        for e in entries:
            assert f"algo.lr={lr}" in e["overrides"].split() or any(
                o.startswith("algo.lr=") and float(o.split("=")[1]) == pytest.approx(float(lr))
                for o in e["overrides"].split()), (name, e["overrides"])
