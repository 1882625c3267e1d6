"""Where the Hydra configs live, composing them outside ``@hydra.main``, the keys a run may set, and a
run's identity (its hash)."""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf

from spolab.errors import ConfigError


def _find_conf_dir() -> Path:
    env = os.environ.get("SPOLAB_CONF_DIR")
    if env:
        return Path(env).resolve()
    repo = Path(__file__).resolve().parents[2] / "conf"  # editable install / source checkout
    if repo.is_dir():
        return repo
    return (Path.cwd() / "conf").resolve()


CONF_DIR = _find_conf_dir()


def _compose(name: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app, whose search path is CONF_DIR
        return compose(config_name=name, overrides=overrides, return_hydra_config=hydra)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=hydra)


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


def entry_names() -> list[str]:
    """Every entry point's config: conf/<name>.yaml."""
    return sorted(p.stem for p in CONF_DIR.glob("*.yaml"))


def _top_keys(name: str) -> set[str]:
    """The top-level keys conf/<name>.yaml declares: its own and its config groups' (read, not composed)."""
    d = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml"), resolve=False)
    groups = {str(k).split("@")[0].removeprefix("override ").strip("/") for item in d.pop("defaults", [])
              if isinstance(item, dict) for k in item}
    return (set(d) - {"hydra"}) | groups


# the `scale` block's keys besides its name: the hardware a scale runs on and the memory plan's assumptions
# (conf/scale/*.yaml, spolab.memory). Every entry keeps them (`scale` is every entry's key); they are placement,
# not identity: run_identity leaves them out, as it leaves out `device`.
SCALE_PLACEMENT = ("world_size", "sharding", "gpu_memory_gb", "micro_batch_size", "prompt_tokens", "launcher")
LAUNCHERS = ("auto", "torchrun")  # scale.launcher: torchrun for world_size > 1, else python -m | torchrun always
SHARDINGS = ("none", "fsdp")  # scale.sharding: none (every device holds every model) | fsdp (model state sharded)

# mappings whose keys are names (splits, stored sources), which validation checks against their own lists
NAMED_MAPPINGS = ("data_mix.sources", "task.splits", "task.max_problems", "task.fractions", "n_problems")


def _extra_keys(have: Any, schema: Any, prefix: str = "") -> list[str]:
    """Dotted keys of ``have`` that ``schema`` lacks; below a schema key that holds no mapping (null, {}, a
    value), or one of NAMED_MAPPINGS, anything goes."""
    out = []
    for k, v in have.items():
        key = f"{prefix}{k}"
        if k not in schema:
            out.append(key)
        elif isinstance(v, dict) and isinstance(schema[k], dict) and schema[k] and key not in NAMED_MAPPINGS:
            out += _extra_keys(v, schema[k], key + ".")
    return out


def _flat_keys(d: Any, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out.append(f"{prefix}{k}")
        if isinstance(v, dict):
            out += _flat_keys(v, f"{prefix}{k}.")
    return out


def check_keys(name: str, overrides: list[str]) -> DictConfig:
    """Compose entry ``name`` as ``python -m spolab.<name> <overrides>`` does and refuse a key that it
    does not declare, however it got there (ConfigError, with the nearest declared key); returns the
    entry's config (:func:`load_config`).

    The declared keys are those of conf/<name>.yaml composed with the same config-group choices
    (algo, task, model, data_mix, ...) but without the scale file and without the ``+``/``++`` keys
    of the command line: a scale file and the command line size a run, they never add a key. A top-level
    key that another entry declares (a scale file sizes every entry at once) is dropped as before
    (:func:`entry_config`)."""
    full = _compose(name, list(overrides), hydra=True)
    choices = {g: c for g, c in full.hydra.runtime.choices.items()
               if c is not None and not g.startswith("hydra") and g != "scale"}
    schema = _compose(name, ["~scale", *(f"{g}={c}" for g, c in choices.items())])
    have = OmegaConf.to_container(OmegaConf.masked_copy(full, [k for k in full.keys() if k != "hydra"]), resolve=False)
    keep = own_keys(name)
    every = set().union(*(_top_keys(e) for e in entry_names()))
    extra = [k for k in have if k not in keep and k not in every]
    declared = {**OmegaConf.to_container(schema, resolve=False),  # scale.name and its placement keys: every entry's
                "scale": {"name": None, **dict.fromkeys(SCALE_PLACEMENT)}}
    extra += _extra_keys({k: v for k, v in have.items() if k in keep}, declared)
    if extra:
        key = extra[0]
        valid = _flat_keys(declared) + sorted(every - set(keep))
        near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        given = [o for o in overrides if o.lstrip("+~").split("=")[0] == key]
        where = (f"the override {given[0]}" if given else
                 f"conf/scale/{full.hydra.runtime.choices.get('scale')}.yaml or another YAML file of {CONF_DIR}")
        raise ConfigError(f"{key}: no such key in spolab.{name}'s configuration (set by {where}); "
                          + (f"did you mean {near[0]}?" if near else "remove it")
                          + (f" ({len(extra) - 1} more unknown: {', '.join(extra[1:4])})" if len(extra) > 1 else ""))
    return entry_config(OmegaConf.masked_copy(full, [k for k in full.keys() if k != "hydra"]), name)


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
    """What makes two runs the same run: the hash of the resolved config without ``tracking``,
    ``device`` and the scale's placement keys (:data:`SCALE_PLACEMENT`: world size, sharding, GPU memory
    and the memory plan's assumptions). Where the run is mirrored, and where and on how many devices it
    is placed, do not change what it computes: a study run on CPU is not rerun to be read on a GPU machine,
    as its thread count is no part of it either. A run folder resumes only a
    checkpoint of the same identity; the Snakefile's ``params.conf`` is the same hash, so
    Snakemake reruns exactly the jobs whose identity changed."""
    d = to_container(cfg)
    if not isinstance(d, dict):
        return config_hash(d)
    d = {k: v for k, v in d.items() if k not in PLACEMENT}
    if isinstance(d.get("scale"), dict):
        d["scale"] = {k: v for k, v in d["scale"].items() if k not in SCALE_PLACEMENT}
    return config_hash(d)


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
