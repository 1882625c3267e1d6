"""Where each step of the pipeline writes, at one scale: the one definition of the folders under
``results/<scale>/``. The entry configs read it as ``${path:<name>}`` (conf/*.yaml: ``data_dir:
${path:data}`` is ``results/<scale.name>/data``), the Snakemake rules as ``PATHS.<name>``
(workflow/rules/common.smk). Importing ``spolab`` registers the ``path`` resolver."""

from __future__ import annotations

from types import SimpleNamespace

from omegaconf import OmegaConf

ROOT = "results/{scale}"  # every output of the DAG at one scale (git-ignored); `publish` copies the report out
FOLDERS = {  # name -> folder under the scale's root
    "data": "data",  # task splits, meta.json, tokenizer/ (spolab.data)
    "sft": "sft",  # the SFT run (spolab.sft)
    "sft_model": "sft/model",  # its final model: π_ref and the initial policy of every RL run
    "q0": "q0",  # reference samples and success counts (spolab.q0)
    "q0_file": "q0/q0.json",  # SPO's Q̂0 input (rl's q0_path)
    "sources": "sources",  # stored off-policy pools <source>.jsonl (spolab.sources)
    "rl": "rl",  # one folder per RL run, <run>-s<seed> (spolab.rl)
    "eval": "eval",  # one folder per evaluated policy (spolab.evaluate)
    "exact": "exact",  # the exact-optimum testbed (spolab.exact)
    "bench": "bench",  # the benchmark's tables (spolab.bench)
    "plan": "plan",  # the memory plan per device of every model entry point (spolab.plan)
    "logs": "logs",  # each job's log
    "benchmarks": "benchmarks",  # each job's Snakemake benchmark: wall time and peak RSS
}


def paths(scale: str) -> SimpleNamespace:
    """Every folder of ``scale``: ``paths("smoke").data == "results/smoke/data"``, ``.root == "results/smoke"``."""
    root = ROOT.format(scale=scale)
    return SimpleNamespace(root=root, **{name: f"{root}/{folder}" for name, folder in FOLDERS.items()})


def _resolve(name: str, *, _root_) -> str:
    """``${path:<name>}`` in a config: that folder at the config's ``scale.name``."""
    if name != "root" and name not in FOLDERS:
        raise KeyError(f"unknown path {name!r}; valid: {['root', *FOLDERS]} (spolab.paths)")
    return getattr(paths(_root_.scale.name), name)


if not OmegaConf.has_resolver("path"):
    OmegaConf.register_new_resolver("path", _resolve)
