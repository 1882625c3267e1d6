"""Where the Hydra configs live, and helpers to compose them outside ``@hydra.main`` (tests)."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig


def _find_conf_dir() -> Path:
    env = os.environ.get("SPOLAB_CONF_DIR")
    if env:
        return Path(env).resolve()
    repo = Path(__file__).resolve().parents[2] / "conf"  # editable install / source checkout
    if repo.is_dir():
        return repo
    return (Path.cwd() / "conf").resolve()


CONF_DIR = _find_conf_dir()


def load_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with Hydra overrides, as ``python -m spolab.<name>`` would."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app, whose search path is CONF_DIR
        return compose(config_name=name, overrides=overrides or [])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides or [])
