"""analysis/lr_sweep.py: the rule that picks every setting's learning rate, on curves whose answer is
worked out by hand, and the committed table against the lrs the studies that read it train with."""

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
from spolab import study  # noqa: E402
from spolab.config import load_config  # noqa: E402
from spolab.errors import ConfigError  # noqa: E402


def curves(setting: str, lr: float, seed: int, val: list[float]) -> pd.DataFrame:
    steps = np.arange(len(val)) * 12
    return pd.DataFrame({"setting": setting, "lr": lr, "seed": seed, "step": steps, "val/pass@1": val,
                         "val/pass@10": 0.5, "val/kl_ref": steps / 100})


def test_docstring_examples_run():
    result = doctest.testmod(lr_sweep)
    assert result.attempted >= 2 and result.failed == 0
    result = doctest.testmod(study)  # setting(): what one lr is chosen for
    assert result.attempted >= 1 and result.failed == 0


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


def test_the_default_study_trains_with_the_committed_tables_choice():
    """Every ✔ row of results/tables/lr_sweep_default.md is in its CSV, and each entry of the default and
    ablation studies trains with the chosen lr of its setting (its lr_setting, else algorithm + data
    mix + other overrides), composed as the rules compose it: the values reach the runs' configs."""
    text = (ROOT / "results/tables/lr_sweep_default.md").read_text()
    rows = re.findall(r"^\| ([^|]+?) \| ([0-9.e-]+) \|.*\| ✔ \|$", text, flags=re.M)
    assert rows, "no chosen row in the committed sweep table"
    chosen = study.sweep_lrs("results/tables/lr_sweep_default.csv")
    assert chosen == pytest.approx({name: float(lr) for name, lr in rows})
    for name in ("default", "ablations"):
        spec = yaml.safe_load((ROOT / f"conf/study/{name}.yaml").read_text())
        assert spec["lr_from_sweep"] == "results/tables/lr_sweep_default.csv"
        for run, e in study.entries(study.load_study(name, "smoke")).items():
            cfg = load_config("rl", ["scale=smoke", *e.override_list])
            want = spec["runs"][run].get("lr_setting") or study.setting_of(e.override_list)
            assert cfg.algo.lr == pytest.approx(chosen[want]), (name, run)


def _study_file(tmp_path: Path, table: str, entry: str) -> Path:
    (tmp_path / "s.yaml").write_text(f"lr_from_sweep: {table}\nseeds:\n  smoke: {{main: [0]}}\n"
                                     f"runs:\n  a: {{group: main, {entry}}}\n")
    return tmp_path


def test_an_entry_whose_setting_the_table_lacks_is_an_error_naming_both(tmp_path):
    table = tmp_path / "sweep.csv"
    table.write_text("setting,lr,chosen\nspo,0.0001,True\nspo,0.0003,False\nppo,3e-05,True\n")
    specs = study.load_study("s", "smoke", _study_file(tmp_path, table, "overrides: algo=ppo"))
    assert specs[0].overrides == "algo=ppo algo.lr=3e-5"
    half = _study_file(tmp_path, table, "overrides: algo=spo data_mix=half_online")
    with pytest.raises(ConfigError, match=rf"setting 'spo half_online'.*{re.escape(str(table))}"):
        study.load_study("s", "smoke", half)
    own = _study_file(tmp_path, table, "overrides: algo=spo algo.lr=1e-3")
    with pytest.raises(ConfigError, match="sets algo.lr in its overrides"):
        study.load_study("s", "smoke", own)
    borrowed = _study_file(tmp_path, table, "lr_setting: spo, overrides: algo=spo data_mix=half_online")
    assert study.load_study("s", "smoke", borrowed)[0].overrides == "algo=spo data_mix=half_online algo.lr=1e-4"
    (tmp_path / "s.yaml").write_text((tmp_path / "s.yaml").read_text().replace(f"lr_from_sweep: {table}\n", ""))
    with pytest.raises(ConfigError, match="no lr_from_sweep table"):
        study.load_study("s", "smoke", tmp_path)
    with pytest.raises(ConfigError, match=r"lr sweep table .*missing.csv does not exist"):
        study.load_study("s", "smoke", _study_file(tmp_path, tmp_path / "missing.csv", "overrides: algo=ppo"))


def test_lr_text_writes_an_lr_as_the_study_files_do():
    assert [study.lr_text(x) for x in (1e-4, 3e-5, 1e-5, 2.5e-4, 1e-2)] == ["1e-4", "3e-5", "1e-5", "2.5e-4", "1e-2"]


def test_a_scale_whose_study_overrides_set_the_lr_takes_it_instead_of_the_sweeps(tmp_path):
    """The sweep ran on the miniature: a study file's `overrides` for a scale that set algo.lr (real_smoke: LoRA
    on a pretrained model) replace the sweep's lr for every entry at that scale, and only there; the committed
    default study does so at real_smoke, and the rl config composed as the rules compose it has that lr."""
    table = tmp_path / "sweep.csv"
    table.write_text("setting,lr,chosen\nspo,0.0001,True\nppo,3e-05,True\n")
    (tmp_path / "s.yaml").write_text(f"lr_from_sweep: {table}\nseeds:\n  smoke: {{main: [0]}}\n  real_smoke: {{main: [0]}}\n"
                                     "overrides:\n  real_smoke: algo.lr=2e-4\n"
                                     "runs:\n  a: {group: main, overrides: algo=ppo}\n"
                                     "  b: {group: main, lr_setting: spo, overrides: algo=spo data_mix=half_online}\n")
    assert [r.overrides for r in study.load_study("s", "smoke", tmp_path)] == [
        "algo=ppo algo.lr=3e-5", "algo=spo data_mix=half_online algo.lr=1e-4"]
    assert [r.overrides for r in study.load_study("s", "real_smoke", tmp_path)] == [
        "algo=ppo algo.lr=2e-4 lora=on", "algo=spo data_mix=half_online algo.lr=2e-4 lora=on"]
    spec = yaml.safe_load((ROOT / "conf/study/default.yaml").read_text())
    lr = float(next(w for w in spec["overrides"]["real_smoke"].split() if w.startswith("algo.lr=")).split("=")[1])
    runs = study.load_study("default", "real_smoke")
    assert runs and all(r.overrides.count("algo.lr=") == 1 for r in runs)
    for r in runs:
        cfg = load_config("rl", ["scale=real_smoke", *r.override_list])
        assert cfg.algo.lr == pytest.approx(lr) and cfg.model.lora.enabled, r.name
