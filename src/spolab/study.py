"""The study model: what ``conf/study/<study>.yaml`` says, read in one place.

Every reader of the study matrix (the Snakemake rules, ``analysis/export.py``, the tests) gets its
runs from :func:`load_study` and turns names into (entry, seed) with :func:`parse_run_name`; none
reads the YAML itself or re-splits names. A study entry is a set of Hydra overrides of
``conf/rl.yaml`` run once per seed of its seed list at the chosen scale::

    spo_beta002: {group: ablation, family: beta, label: SPO β=0.02, colour: "#843c39", seeds: ablation,
                  overrides: algo=spo algo.beta=0.02}

A study file with ``lr_from_sweep: <table>`` takes every entry's policy lr from the lr sweep's table
(analysis/lr_sweep.py): the chosen lr of the entry's setting (its algorithm, data mix and other overrides,
:func:`setting_of`)
is appended to its overrides as ``algo.lr=<lr>`` (:func:`sweep_lrs`). A study file's
``overrides: {<scale>: <overrides>}`` is appended to every entry's overrides at that scale (the lr sweep
keeps its validation schedule there); where they set ``algo.lr`` (a scale the sweep did not run at, such as
real_smoke's pretrained model), that lr replaces the sweep's for every entry at that scale. A scale whose file sets ``rl_lora: true`` (``scale=paper``) trains LoRA
adapters in every run: ``lora=on`` ends every entry's overrides (:func:`scale_rl_lora`).
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from spolab.config import CONF_DIR, load_config
from spolab.errors import ConfigError

# where a study file's paths (lr_from_sweep) are relative to: the checkout holding spolab's source and the
# committed results/ (not CONF_DIR, which SPOLAB_CONF_DIR may point at a copy of conf/), else the cwd
_CHECKOUT = Path(__file__).resolve().parents[2]
PROJECT_DIR = _CHECKOUT if (_CHECKOUT / "conf").is_dir() else Path.cwd()

STUDY_DIR = CONF_DIR / "study"  # honours SPOLAB_CONF_DIR, like every entry point
GROUPS = ("main", "offpolicy", "ablation", "sweep")  # sweep: conf/study/lr_sweep.yaml (analysis/lr_sweep.py)
_NAME = re.compile(r"^(?P<run>[\w.-]+)-s(?P<seed>\d+)$")  # greedy: spo_lr3e-5-s0 -> (spo_lr3e-5, 0)


@dataclass(frozen=True)
class RunSpec:
    """One RL run of the study: an entry of the matrix at one seed."""

    name: str  # "<run>-s<seed>": the run folder, the MLflow run name, the Snakemake wildcards
    run: str  # the study entry
    seed: int
    group: str  # main | offpolicy | ablation | sweep
    family: str  # the ablation family (figure F8), "" outside the ablation group
    label: str  # how figures and the report name the entry
    colour: str  # its colour in every figure ("" where the study file gives none: analysis/plot.py picks one)
    order: int  # its position in the study file: the order figures and tables list entries in
    role: str  # what the claims compare it as (analysis/report.py ROLES: spo_online, ppo, ...), "" for none
    reference: str | None  # the entry it is judged against: ablations and off-policy sources vs SPO
    overrides: str  # Hydra overrides of conf/rl.yaml, space-separated
    protocols: tuple[str, ...]  # sampling protocols of its final evaluation; `exact` (no sampling) by default
    needs: tuple[str, ...]  # study entries whose output of the same seed it reads (earlier_run)

    @property
    def override_list(self) -> list[str]:
        return self.overrides.split()


def run_name(run: str, seed: int) -> str:
    return f"{run}-s{seed}"


def parse_run_name(name: str) -> tuple[str, int | None]:
    """``spo_half_online-s1`` -> ("spo_half_online", 1); ``sft`` -> ("sft", None)."""
    if name == "sft":
        return "sft", None
    m = _NAME.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a study run name (<entry>-s<seed>) nor 'sft'")
    return m["run"], int(m["seed"])


def setting(algo: str, data_mix: str, extra: dict[str, str] | None = None) -> str:
    """What the lr sweep chooses one lr for: the algorithm, plus its data mix unless that is online,
    plus every other override that changes the training (``algo.loss=bce``, ``algo.beta=0.2``), sorted.

    >>> setting("spo", "online"), setting("spo", "half_online")
    ('spo', 'spo half_online')
    >>> setting("spo", "online", {"algo.loss": "bce", "algo.beta": "0.2"})
    'spo algo.beta=0.2 algo.loss=bce'
    """
    key = algo if data_mix in ("online", "") else f"{algo} {data_mix}"
    return " ".join([key] + [f"{k}={v}" for k, v in sorted((extra or {}).items())])


# overrides that name a run's identity but not its setting: the lr is what the sweep chooses, the seed is
# the replicate, and algo / data_mix are the setting's first words
# the replicate, algo / data_mix are the setting's first words, and eval_every is how often a run is measured
# (validation has its own generator: the training is the same at any eval_every)
_NOT_SETTING = ("algo", "data_mix", "algo.lr", "seed", "eval_every")


def setting_of(overrides: list[str] | str) -> str:
    """The setting of a list of Hydra overrides (a study entry's): :func:`setting` of its algorithm, data
    mix and other overrides. Overrides are compared as written: ``algo.beta=0.2`` and ``algo.beta=0.20``
    are two settings.

    >>> setting_of("algo=spo data_mix=online algo.loss=bce algo.lr=1e-4")
    'spo algo.loss=bce'
    >>> setting_of("algo=ppo")
    'ppo'
    """
    words = overrides.split() if isinstance(overrides, str) else list(overrides)
    kv = dict(w.split("=", 1) for w in words if "=" in w)
    d = _rl_defaults()
    return setting(kv.get("algo", d["algo"]), kv.get("data_mix", d["data_mix"]),
                   {k: v for k, v in kv.items() if k not in _NOT_SETTING})


def sweep_lrs(table: str | Path) -> dict[str, float]:
    """setting -> the lr the sweep chose for it (the ``chosen`` rows of analysis/lr_sweep.py's CSV)."""
    path = Path(table) if Path(table).is_absolute() else PROJECT_DIR / table
    if not path.exists():
        raise ConfigError(f"lr sweep table {path} does not exist: run the sweep (snakemake --config study=lr_sweep)")
    with open(path, newline="") as f:
        return {r["setting"]: float(r["lr"]) for r in csv.DictReader(f) if r["chosen"] == "True"}


def lr_text(lr: float) -> str:
    """An lr as an override writes it: ``1e-4``, ``3e-5``, ``2.5e-4`` (the exponent without its zero)."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _rl_defaults() -> dict[str, str]:
    """conf/rl.yaml's default algo and data_mix (what an entry runs when its overrides name neither)."""
    defaults = yaml.safe_load((CONF_DIR / "rl.yaml").read_text())["defaults"]
    return {k: v for d in defaults if isinstance(d, dict) for k, v in d.items() if k in ("algo", "data_mix")}


def _with_sweep_lr(run: str, e: dict, table: str, lrs: dict[str, float], file: str) -> str:
    """The entry's overrides + ``algo.lr=<the sweep's choice for its setting>``: the entry's ``lr_setting``
    where it names one (a setting the sweep did not run borrows another's lr), else its own."""
    overrides = e["overrides"]
    words = dict(w.split("=", 1) for w in overrides.split() if "=" in w)
    if "algo.lr" in words:
        raise ConfigError(f"{file}: {run} sets algo.lr in its overrides, but the study takes every lr from "
                          f"lr_from_sweep ({table}): remove one")
    chosen = e.get("lr_setting") or setting_of(overrides)
    if chosen not in lrs:
        raise ConfigError(f"{file}: {run} runs setting {chosen!r}, for which the lr sweep's table {table} has no "
                          f"chosen lr (it has {sorted(lrs)}): sweep that setting (conf/study/lr_sweep.yaml)")
    return f"{overrides} algo.lr={lr_text(lrs[chosen])}"


@functools.cache
def scale_rl_lora(scale: str) -> bool:
    """Whether ``scale``'s file sets ``rl_lora: true``: every RL run of a study at that scale trains LoRA adapters
    (rl's ``lora=on``). The key is the memory plan's (conf/plan.yaml: false), so ``python -m spolab.plan`` plans
    the rl rows as the study runs them."""
    return bool(load_config("plan", [f"scale={scale}"]).rl_lora)


def load_study(study: str, scale: str, study_dir: str | Path | None = None) -> list[RunSpec]:
    """The runs of ``conf/study/<study>.yaml`` at ``scale``, in file order, seeds expanded; with
    ``lr_from_sweep``, each entry's overrides end with its setting's lr from that table."""
    path = Path(study_dir or STUDY_DIR) / f"{study}.yaml"
    if not path.exists():
        valid = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"study={study!r}: no {path}; valid: {valid}")
    spec = yaml.safe_load(path.read_text())
    seeds = spec.get("seeds", {})
    if scale not in seeds:
        raise ConfigError(f"scale={scale!r}: {path.name} has no seed lists for it; valid: {sorted(seeds)}")
    runs = spec["runs"]
    common = (spec.get("overrides") or {}).get(scale, "")  # appended to every entry's overrides at this scale
    if scale_rl_lora(scale):
        common = f"{common} lora=on".strip()
    # a scale the sweep did not run at (real_smoke: a pretrained model) states its own lr in the study's overrides
    # for that scale; the sweep's lrs are then not appended (they were chosen for the miniature)
    own_lr = any(w.startswith("algo.lr=") for w in common.split())
    table = None if own_lr else spec.get("lr_from_sweep")
    lrs = sweep_lrs(table) if table else {}
    roles = [e["role"] for e in runs.values() if e.get("role")]
    if len(roles) != len(set(roles)):
        raise ConfigError(f"{path.name}: a role names one entry; these name several: "
                          f"{sorted({r for r in roles if roles.count(r) > 1})}")
    out = []
    for order, (run, e) in enumerate(runs.items()):
        if e.get("group") not in GROUPS:
            raise ConfigError(f"{path.name}: {run}.group={e.get('group')!r}: must be one of {list(GROUPS)}")
        seed_list = e.get("seeds", "main")
        if seed_list not in seeds[scale]:
            raise ConfigError(f"{path.name}: {run}.seeds={seed_list!r}: must be one of {sorted(seeds[scale])}")
        needs = tuple(e.get("needs", []))
        for other in needs:
            if other not in runs:
                raise ConfigError(f"{path.name}: {run}.needs names {other!r}, which is not an entry of the study")
        reference = e.get("reference", None if e["group"] in ("main", "sweep") else "spo")
        if reference is not None and reference not in runs:
            raise ConfigError(f"{path.name}: {run}.reference={reference!r} is not an entry of the study")
        if e.get("lr_setting") and not spec.get("lr_from_sweep"):
            raise ConfigError(f"{path.name}: {run}.lr_setting names a setting of the lr sweep, but the study has no "
                              "lr_from_sweep table to read it from")
        overrides = _with_sweep_lr(run, e, table, lrs, path.name) if table else e["overrides"]
        overrides = f"{overrides} {common}".strip()
        for seed in seeds[scale][seed_list]:
            out.append(RunSpec(name=run_name(run, seed), run=run, seed=int(seed), group=e["group"],
                               family=e.get("family", ""), label=e.get("label", run), colour=e.get("colour", ""),
                               order=order, role=e.get("role", ""), reference=reference, overrides=overrides,
                               protocols=tuple(e.get("protocols", ["exact"])), needs=needs))
    return out


def entries(specs: list[RunSpec]) -> dict[str, RunSpec]:
    """Study entry -> its first RunSpec (what every seed of an entry shares)."""
    out: dict[str, RunSpec] = {}
    for s in specs:
        out.setdefault(s.run, s)
    return out
