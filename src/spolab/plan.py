"""``python -m spolab.plan scale=<name>``: the memory plan of a scale, before any job runs.

For every model entry point (``sft``, ``q0``, ``sources``, ``rl`` once per algorithm, ``evaluate`` as the
workflow runs it, with π_ref) composed at the scale, the bytes per device of weights, gradients, optimiser
state, π_ref, critic, activations and KV cache, the peak total and the phase that sets it
(:mod:`spolab.memory` says what each counts). Prints the table, writes it to ``{out_dir}/plan.md`` and
``plan.json``, and ends with a configuration error (exit status 2) when an entry point exceeds
``scale.gpu_memory_gb``, the same one line ``spolab.validate`` refuses its job with. The model is built on
the meta device: nothing is downloaded or allocated, and the weights need not be on this machine.

Overrides on the command line reach every entry that has the key (``python -m spolab.plan scale=paper
scale.world_size=4 batch_size=128``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from spolab.cli import entry
from spolab.config import load_config, own_keys
from spolab.errors import ConfigError
from spolab.memory import (
    BENCH_HINT,
    GIB,
    ITEMS,
    PLANNED,
    Arch,
    Hardware,
    Plan,
    architecture,
    bench_plans,
    check_bench_memory,
    check_memory,
    hardware,
    plan_entry,
    sequence_lengths,
)

log = logging.getLogger(__name__)

SET_BY_PLAN = ("scale", "algo", "out_dir", "ref_model_dir")  # overrides the plan sets itself for each entry


def forwarded(overrides: list[str], name: str) -> list[str]:
    """The command-line overrides that entry ``name`` has a key or group for: ``scale.world_size=4`` and
    ``batch_size=128`` reach the entries that have them; the choice of scale and algorithm (``scale=``,
    ``algo=``), ``out_dir`` and ``ref_model_dir`` are the plan's to set."""
    keep = own_keys(name)
    out = []
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key.split(".", 1)[0] in keep and key not in SET_BY_PLAN:
            out.append(o)
    return out


def entry_configs(scale: str, entries: list[str], algos: list[str], overrides: list[str] = (),
                  lora: bool = False) -> list[tuple[str, DictConfig]]:
    """(entry, config) of each planned entry point at ``scale``: ``rl`` once per algorithm (with ``lora``, with
    LoRA adapters: rl's ``lora=on``), ``evaluate`` with ``ref_model_dir`` set as the workflow sets it (π_ref is
    held for the KL)."""
    out = []
    for name in entries:
        if name not in PLANNED:
            raise ConfigError(f"entries: {name!r} is not a model entry point; valid: {list(PLANNED)}")
        base = [f"scale={scale}", *forwarded(list(overrides), name)]
        if name == "rl":
            out += [(name, load_config(name, [*base, f"algo={a}", *(["lora=on"] if lora else [])])) for a in algos]
        elif name == "evaluate":
            out.append((name, load_config(name, [*base, "ref_model_dir=${path:sft_model}"])))
        else:
            out.append((name, load_config(name, base)))
    return out


def scale_plans(scale: str, entries: list[str] = PLANNED, algos: list[str] = ("spo", "ppo", "grpo", "rloo"),
                overrides: list[str] = (), lora: bool = False) -> tuple[list[Plan], Arch, Hardware, list[tuple[str, DictConfig]]]:
    """Every entry point's plan at ``scale`` (the model is built once, from the first entry's config)."""
    configs = entry_configs(scale, list(entries), list(algos), overrides, lora)
    first = configs[0][1]
    arch, hw = architecture(first.model, first.task), hardware(first)
    return [plan_entry(cfg, name, arch, hw) for name, cfg in configs], arch, hw, configs


def check_scale(scale: str, overrides: list[str] = ()) -> None:
    """Refuse a scale whose plan exceeds its ``gpu_memory_gb`` for any entry point (the workflow calls it
    once, before the DAG's first job): the first such entry's one-line ConfigError. A scale without
    ``gpu_memory_gb`` is not planned at all. RL is planned as the study runs it: with LoRA adapters where the
    scale sets ``rl_lora`` (spolab.study.scale_rl_lora)."""
    from spolab.study import scale_rl_lora

    if hardware(load_config("rl", [f"scale={scale}", *forwarded(list(overrides), "rl")])).gpu_memory_gb is None:
        return
    for name, cfg in entry_configs(scale, list(PLANNED), ["spo", "ppo", "grpo", "rloo"], overrides,
                                   lora=scale_rl_lora(scale)):
        check_memory(cfg, name)
    check_bench_memory(load_config("bench", [f"scale={scale}", *forwarded(list(overrides), "bench")]))


def _unit(plans: list[Plan]) -> tuple[str, int]:
    big = max(p.total for p in plans)
    return ("GiB", GIB) if big >= GIB else ("MiB", 2**20) if big >= 2**20 else ("KiB", 2**10)


def table(plans: list[Plan], hw: Hardware) -> str:
    """A markdown table: one row per entry point, the items of :data:`spolab.memory.ITEMS`, the total and
    its peak phase (and, with a budget, whether it fits)."""
    unit, size = _unit(plans)
    head = ["entry", *ITEMS, "total", "peak"] + (["fits"] if hw.gpu_memory_gb is not None else [])
    rows = []
    for p in plans:
        row = [p.label, *(f"{p.items[k] / size:.2f}" for k in ITEMS), f"{p.total / size:.2f}", p.peak]
        if hw.gpu_memory_gb is not None:
            row.append("yes" if p.total <= hw.gpu_memory_gb * GIB else "NO")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([f"{unit} per device", "", line(head), sep, *(line(r) for r in rows)])


def header(scale: str, arch: Arch, hw: Hardware, cfg: DictConfig) -> str:
    P, T = sequence_lengths(cfg, arch, hw)
    budget = f"gpu_memory_gb {hw.gpu_memory_gb:g} per device" if hw.gpu_memory_gb is not None else "no budget (gpu_memory_gb null)"
    shard = f"sharding {hw.sharding}, world_size {hw.world_size}"
    micro = f"micro_batch_size {hw.micro_batch_size}" if hw.micro_batch_size else "micro_batch_size null (whole batches)"
    return (f"Memory plan, scale={scale}: model {arch.name}, {arch.params:,} parameters (PPO critic {arch.critic_params:,}), "
            f"{arch.layers} layers, hidden {arch.hidden}, {arch.heads} heads / {arch.kv_heads} kv heads, vocab {arch.vocab}; "
            f"precision {cfg.precision}; sequences {P} prompt + {T} response tokens; {shard}; {micro}; {budget}.")


def run(cfg: DictConfig) -> dict:
    overrides: list[str] = []
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # called outside a Hydra app (tests): the scale only
        pass
    scale = cfg.scale.name
    plans, arch, hw, configs = scale_plans(scale, list(cfg.entries), list(cfg.algos), overrides, bool(cfg.rl_lora))
    if cfg.bench:  # the benchmark's rows: each an RL update in one process on one device
        bench = bench_plans(load_config("bench", [f"scale={scale}", *forwarded(overrides, "bench")]))
        plans += [p for _, p in bench]
        configs += [("bench", rl) for rl, _ in bench]
    text = header(scale, arch, hw, configs[0][1]) + "\n\n" + table(plans, hw)
    print(text, flush=True)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.md").write_text(text + "\n")
    rows = {p.label: {**{k: p.items[k] for k in ITEMS}, "total": p.total, "peak": p.peak} for p in plans}
    (out / "plan.json").write_text(json.dumps({"scale": scale, "params": arch.params, "critic_params": arch.critic_params,
                                               "hardware": hw.__dict__, "bytes_per_device": rows}, indent=1) + "\n")
    for (name, entry_cfg), plan in zip(configs, plans):  # the first entry point over budget: its job's refusal
        check_memory(entry_cfg, "rl" if name == "bench" else name, plan, BENCH_HINT if name == "bench" else None)
    return rows


main = entry("plan", run)


if __name__ == "__main__":
    main()
