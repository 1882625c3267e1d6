"""Every config composes at every scale; bad config values fail with a clear message."""

from pathlib import Path

import pytest

from spolab import data
from spolab.config import CONF_DIR, load_config
from spolab.tasks.io import load_split

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
    from spolab.config import load_protocol

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
        load_split(tmp_path, "sft")
    assert Path(CONF_DIR).is_dir()


ENTRIES = ["data", "sft", "q0", "sources", "rl", "evaluate", "exact", "bench", "plan"]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", ENTRIES)
def test_each_entry_holds_only_its_own_keys(name, scale):
    """A scale file sizes every entry at once; each entry keeps only the keys it defines, so another
    entry's knob (bench's repeats, the sources' problems, the sft block) never reaches its hash."""
    from spolab.config import _compose, own_keys

    raw, cfg = _compose(name, [f"scale={scale}"]), load_config(name, [f"scale={scale}"])
    assert set(cfg.keys()) == set(raw.keys()) & own_keys(name)
    for foreign in set(raw.keys()) - set(cfg.keys()):  # dropped: it must be some other entry's key
        assert any(foreign in own_keys(other) for other in ENTRIES if other != name), (name, foreign)
    if name == "rl" and scale == "smoke":
        assert not {"repeats", "sizes", "variants", "problems", "sft", "exact", "forward_batch_size"} & set(cfg.keys())
        assert cfg.updates == 6 and cfg.val_problems == 20


def test_every_scale_key_is_read_by_some_entry():
    """No key of a scale file is silently dropped by every entry (a typo would be)."""
    import yaml

    from spolab.config import own_keys

    owned = set().union(*(own_keys(e) for e in ENTRIES))
    for path in (CONF_DIR / "scale").glob("*.yaml"):
        keys = set(yaml.safe_load(path.read_text())) - {"defaults"}
        assert keys <= owned, (path.name, keys - owned)


def test_batch_size_means_trajectories_per_update():
    """`batch_size` is the RL budget (rl, bench); the sequences of one forward pass are `forward_batch_size`."""
    for name in ("evaluate", "q0", "sources"):
        cfg = load_config(name, [])
        assert "forward_batch_size" in cfg and "batch_size" not in cfg
    assert load_config("rl", []).batch_size == load_config("bench", []).batch_size == 64


@pytest.mark.parametrize("scale", SCALES)
def test_paths_are_the_scale_folders(scale):
    """conf/*.yaml's ${path:<name>} and the Snakemake rules' PATHS read one definition (spolab.paths)."""
    from spolab.paths import paths

    root = f"results/{scale}"
    p = paths(scale)
    assert (p.root, p.data, p.sft_model, p.q0_file, p.rl) == (root, f"{root}/data", f"{root}/sft/model",
                                                              f"{root}/q0/q0.json", f"{root}/rl")
    rl = load_config("rl", [f"scale={scale}", "seed=3"])
    assert (rl.data_dir, rl.sft_dir, rl.q0_path, rl.sources_dir) == (p.data, p.sft_model, p.q0_file, p.sources)
    assert rl.earlier_run_path == f"{root}/rl/ppo-s3/trajectories.jsonl"
    assert rl.out_dir == f"{root}/rl/spo-online-s3"
    assert load_config("evaluate", [f"scale={scale}", "name=sft"]).out_dir == f"{root}/eval/sft"
    for entry, folder in [("data", "data"), ("sft", "sft"), ("q0", "q0"), ("sources", "sources"), ("exact", "exact"),
                          ("bench", "bench")]:
        assert load_config(entry, [f"scale={scale}"]).out_dir == f"{root}/{folder}", entry
