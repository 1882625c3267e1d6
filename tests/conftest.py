"""Shared fixtures: a smoke-scale dataset and SFT model, built once per test session."""

from __future__ import annotations

import pytest

from spolab.config import load_config


def smoke_cfg(name: str, tmp, *overrides: str):
    """A config composed exactly as ``python -m spolab.<name> scale=smoke`` would, writing to tmp."""
    tracking = [] if name == "data" else [f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                                          f"tracking.artifact_root={tmp}/mlartifacts"]
    return load_config(name, ["scale=smoke", *tracking, *overrides])


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    from spolab import data

    root = tmp_path_factory.mktemp("smoke")
    cfg = smoke_cfg("data", root, f"out_dir={root}/data")
    data.run(cfg)
    return root / "data"


@pytest.fixture(scope="session")
def smoke_sft(smoke_data):
    from spolab import sft

    root = smoke_data.parent
    cfg = smoke_cfg("sft", root, f"data_dir={smoke_data}", f"out_dir={root}/sft")
    summary = sft.run(cfg)
    return root / "sft", summary


@pytest.fixture(scope="session")
def smoke_q0(smoke_sft, smoke_data):
    from spolab import q0

    root = smoke_data.parent
    cfg = smoke_cfg("q0", root, f"data_dir={smoke_data}", f"sft_dir={root}/sft/model", f"out_dir={root}/q0")
    q0.run(cfg)
    return root / "q0"


def rl_cfg(root, tmp, *overrides):
    """An RL config on the session's smoke data, SFT model and Q̂0, writing under tmp."""
    return smoke_cfg("rl", tmp, f"data_dir={root}/data", f"sft_dir={root}/sft/model", f"q0_path={root}/q0/q0.json",
                     f"out_dir={tmp}/rl", *overrides)
