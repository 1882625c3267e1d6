"""Where the Hydra configs live, composing them outside ``@hydra.main``, and a run's identity (its hash)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf


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


def to_container(cfg: Any) -> Any:
    """A resolved plain-Python copy of an OmegaConf config (anything else passes through)."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def config_hash(cfg: Any) -> str:
    """12-hex sha256 of the resolved config serialised as sorted JSON."""
    blob = json.dumps(to_container(cfg), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_identity(cfg: Any) -> str:
    """What makes two runs the same run: the hash of the resolved config without ``tracking``
    (where the run is mirrored does not change what it computes). A run folder resumes only a
    checkpoint of the same identity; the Snakefile's ``params.conf`` is the same hash, so
    Snakemake reruns exactly the jobs whose identity changed."""
    d = to_container(cfg)
    return config_hash({k: v for k, v in d.items() if k != "tracking"} if isinstance(d, dict) else d)


def flatten(d: Any, prefix: str = "", sep: str = ".", max_len: int = 6000) -> dict[str, str]:
    """Flatten nested dicts/lists into ``{"a.b.0": "value"}`` with stringified values cut at ``max_len``."""
    out: dict[str, str] = {}

    def rec(obj: Any, key: str) -> None:
        if isinstance(obj, Mapping) and obj:
            for k, v in obj.items():
                rec(v, f"{key}{sep}{k}" if key else str(k))
        elif isinstance(obj, list | tuple) and obj:
            for i, v in enumerate(obj):
                rec(v, f"{key}{sep}{i}" if key else str(i))
        else:
            s = "{}" if isinstance(obj, Mapping) else "[]" if isinstance(obj, list | tuple) else str(obj)
            out[key] = s[:max_len]

    rec(to_container(d), prefix)
    return out
