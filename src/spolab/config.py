"""Where the Hydra configs live, composing them outside ``@hydra.main``, and a run's identity (its hash)."""

from __future__ import annotations

import functools
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


def _compose(name: str, overrides: list[str]) -> DictConfig:
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app, whose search path is CONF_DIR
        return compose(config_name=name, overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


@functools.cache
def own_keys(name: str) -> frozenset[str]:
    """The top-level keys of entry ``name``: what conf/<name>.yaml and its groups define, composed
    without any scale file (``~scale``: a scale sets keys of every entry), plus ``scale`` itself,
    whose ``name`` every entry reads."""
    return frozenset(_compose(name, ["~scale"]).keys()) | {"scale"}


def entry_config(cfg: DictConfig, name: str) -> DictConfig:
    """``cfg`` with only entry ``name``'s own top-level keys.

    A scale file (``@package _global_``) sizes every entry at once, so it also sets keys that
    other entries read (bench's ``repeats`` in an RL run, say). They are dropped here, so an
    entry's config, its run identity (the Snakefile's ``params.conf``), its MLflow params and its
    ``config.yaml`` hold only what it reads: editing a bench key reruns no RL job."""
    keep = own_keys(name)
    if set(cfg.keys()) <= keep:
        return cfg
    pruned = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k in keep])
    OmegaConf.set_struct(pruned, OmegaConf.is_struct(cfg))
    return pruned


def load_config(name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with Hydra overrides, as ``python -m spolab.<name>`` would
    (its own keys only: :func:`entry_config`)."""
    return entry_config(_compose(name, list(overrides or [])), name)


def to_container(cfg: Any) -> Any:
    """A resolved plain-Python copy of an OmegaConf config (anything else passes through)."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def config_hash(cfg: Any) -> str:
    """12-hex sha256 of the resolved config serialised as sorted JSON."""
    blob = json.dumps(to_container(cfg), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


PLACEMENT = ("tracking", "device")  # top-level keys that say where a run goes, not what it is


def run_identity(cfg: Any) -> str:
    """What makes two runs the same run: the hash of the resolved config without ``tracking`` and
    ``device`` (where the run is mirrored, and where it is placed, do not change what it computes: a
    study run on CPU is not rerun to be read on a GPU machine, as its thread count is no part of it either). A run folder resumes only a
    checkpoint of the same identity; the Snakefile's ``params.conf`` is the same hash, so
    Snakemake reruns exactly the jobs whose identity changed."""
    d = to_container(cfg)
    return config_hash({k: v for k, v in d.items() if k not in PLACEMENT} if isinstance(d, dict) else d)


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


def protocol_path(name: str) -> Path:
    """``conf/protocol/<name>.yaml``, an evaluation protocol (under :data:`CONF_DIR` as it is when called)."""
    return CONF_DIR / "protocol" / f"{name}.yaml"


def load_protocol(name: str) -> DictConfig:
    """The evaluation protocol ``name`` (n, temperature, top-p, ks); an unknown name raises, listing the valid ones."""
    path = protocol_path(name)
    if not path.exists():
        valid = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"unknown evaluation protocol {name!r}; valid: {valid}")
    return OmegaConf.load(path)
