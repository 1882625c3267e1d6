"""The study model: what ``conf/study/<study>.yaml`` says, read in one place.

Every reader of the study matrix (the Snakemake rules, ``analysis/export.py``, the tests) gets its
runs from :func:`load_study` and turns names into (entry, seed) with :func:`parse_run_name`; none
reads the YAML itself or re-splits names. A study entry is a set of Hydra overrides of
``conf/rl.yaml`` run once per seed of its seed list at the chosen scale::

    spo_beta002: {group: ablation, family: beta, label: SPO β=0.02, seeds: ablation,
                  overrides: algo=spo algo.beta=0.02}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from spolab.config import CONF_DIR
from spolab.errors import ConfigError

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
    reference: str | None  # the entry it is judged against: ablations and off-policy sources vs SPO
    overrides: str  # Hydra overrides of conf/rl.yaml, space-separated
    protocols: tuple[str, ...]  # evaluation protocols of its final test evaluation
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


def load_study(study: str, scale: str, study_dir: str | Path | None = None) -> list[RunSpec]:
    """The runs of ``conf/study/<study>.yaml`` at ``scale``, in file order, seeds expanded."""
    path = Path(study_dir or STUDY_DIR) / f"{study}.yaml"
    if not path.exists():
        valid = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"study={study!r}: no {path}; valid: {valid}")
    spec = yaml.safe_load(path.read_text())
    seeds = spec.get("seeds", {})
    if scale not in seeds:
        raise ConfigError(f"scale={scale!r}: {path.name} has no seed lists for it; valid: {sorted(seeds)}")
    runs = spec["runs"]
    out = []
    for run, e in runs.items():
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
        for seed in seeds[scale][seed_list]:
            out.append(RunSpec(run_name(run, seed), run, int(seed), e["group"], e.get("family", ""),
                               e.get("label", run), reference, e["overrides"], tuple(e.get("protocols", ["policy"])),
                               needs))
    return out


def entries(specs: list[RunSpec]) -> dict[str, RunSpec]:
    """Study entry -> its first RunSpec (what every seed of an entry shares)."""
    out: dict[str, RunSpec] = {}
    for s in specs:
        out.setdefault(s.run, s)
    return out
