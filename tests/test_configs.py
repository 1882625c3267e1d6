"""Every config composes at every scale; bad config values fail with a clear message."""

from pathlib import Path

import pytest

from spolab import data
from spolab.config import CONF_DIR, load_config

ENTRY = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
SCALES = sorted(p.stem for p in (CONF_DIR / "scale").glob("*.yaml"))


def test_entry_points_exist():
    assert {"data", "sft", "evaluate", "q0", "rl", "exact", "bench"} <= set(ENTRY)
    assert {"smoke", "default"} <= set(SCALES)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", ENTRY)
def test_compose(name, scale):
    cfg = load_config(name, [f"scale={scale}"])
    assert cfg.scale.name == scale
    assert cfg.out_dir.startswith(f"results/{scale}/") or cfg.out_dir == f"results/bench/{scale}"


@pytest.mark.parametrize("group", ["model", "task", "tracking", "algo", "data_mix"])
def test_compose_every_group_option(group):
    for opt in sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")):
        cfg = load_config("rl", [f"{group}={opt}"])
        assert cfg[group] is not None


def test_protocols_load():
    from spolab.evaluate import load_protocol

    assert load_protocol("paper").temperature == 0.4 and load_protocol("policy").n == 20


def test_bad_config_values_raise_clearly(tmp_path):
    cfg = load_config("data", ["scale=smoke", f"out_dir={tmp_path}", "+task.splits.train=5"])
    with pytest.raises(ValueError, match="unknown split"):
        data.run(cfg)
    cfg = load_config("data", ["scale=smoke", f"out_dir={tmp_path}", "task.ood_fraction=1.5"])
    with pytest.raises(ValueError, match="ood_fraction"):
        data.run(cfg)


def test_missing_inputs_name_the_step(tmp_path):
    with pytest.raises(FileNotFoundError, match="spolab.data"):
        data.load_split(tmp_path, "sft")
    assert Path(CONF_DIR).is_dir()
