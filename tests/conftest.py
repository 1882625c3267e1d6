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
