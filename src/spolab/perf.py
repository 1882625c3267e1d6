"""What the benchmark (``python -m spolab.bench``) measures with, as plain functions: the variants it
compares, the exact bytes of a training state, the peak bytes of activations saved for backward, and
this machine's matmul throughput."""

from __future__ import annotations

import statistics
import time

import torch

from spolab.config import load_config
from spolab.utils import sync

VARIANTS = {  # name -> (algo config, data mix)
    "spo": ("spo", "online"),
    "spo_ppo_steps": ("spo", "online"),  # SPO at PPO's optimiser steps per update (ppo_steps_per_update)
    "spo_half_online": ("spo", "half_online"),
    "ppo": ("ppo", "online"),
    "grpo": ("grpo", "online"),
    "rloo": ("rloo", "online"),
}


def state_bytes(modules, optimizers) -> int:
    """Exact bytes of parameters, gradients and optimizer state of the given objects; a parameter that
    several of them share (a LoRA policy's π_ref view and critic) is counted once."""
    total, seen = 0, set()
    for m in modules:
        for p in m.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel() * p.element_size()
            if p.grad is not None:
                total += p.grad.numel() * p.grad.element_size()
    for opt in optimizers:
        for st in opt.state.values():
            total += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return total


TRAINING_STATE = ("trainable", "grads", "optimiser", "copies")  # what training_state's "train_state" sums


def training_state(modules, ref) -> dict[str, int]:
    """Bytes of an algorithm's training state, computed from its networks (not measured: gradients and
    AdamW moments are counted as they are at an optimiser step, every parameter once even where networks share
    it). ``modules`` are the trained networks, the policy first (``Algorithm.modules()``), ``ref`` π_ref.

    ``trainable``, ``grads``, ``optimiser``: parameters that require grad, their gradients and AdamW's two
    moments (each the parameter's size). ``copies``: frozen weights outside the policy's network, a second
    model in memory (π_ref of full fine-tuning; with LoRA π_ref is the policy's own network: none).
    ``frozen_base``: frozen weights of the policy's network (LoRA's base; none in full fine-tuning).
    ``train_state`` sums trainable, grads, optimiser and copies; ``total`` adds frozen_base;
    ``trainable_params`` counts the trainable parameters."""
    out = dict.fromkeys(("trainable_params", *TRAINING_STATE, "frozen_base"), 0)
    seen: set[int] = set()
    for i, m in enumerate([*modules, ref]):
        for p in m.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            n = p.numel() * p.element_size()
            if p.requires_grad:
                out["trainable_params"] += p.numel()
                out["trainable"] += n
                out["grads"] += n
                out["optimiser"] += 2 * n
            else:
                out["frozen_base" if i == 0 else "copies"] += n
    out["train_state"] = sum(out[k] for k in TRAINING_STATE)
    out["total"] = out["train_state"] + out["frozen_base"]
    return out


class SavedActivations:
    """Live bytes of tensors autograd saves for backward (activations; parameters excluded), and
    their peak: inside the context, each saved tensor is counted when packed and uncounted when
    the graph that holds it is freed."""

    def __init__(self):
        self.live = self.peak = 0

    class _Token:
        def __init__(self, owner, n):
            self.owner, self.n = owner, n
            owner.live += n
            owner.peak = max(owner.peak, owner.live)

        def __del__(self):
            self.owner.live -= self.n

    def pack(self, t):
        n = 0 if isinstance(t, torch.nn.Parameter) else t.numel() * t.element_size()
        return t, self._Token(self, n)

    @staticmethod
    def unpack(packed):
        return packed[0]

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def ppo_steps_per_update() -> int:
    """PPO's policy optimiser steps per update, epochs × minibatches (conf/algo/ppo.yaml): the
    ``spo_ppo_steps`` variant takes as many gradient steps per batch, so the speed comparison is
    also made at equal optimiser steps, not only at equal samples."""
    a = load_config("rl", ["algo=ppo"]).algo
    return int(a.epochs) * int(a.minibatches)


FINE_TUNING = ("full", "lora")  # the benchmark's ways to train: every weight, or LoRA adapters (rl's lora=on)


def bench_batch(bench_cfg) -> int:
    """Trajectories of one benchmarked update: one device's share of the scale's batch, ``batch_size`` /
    ``scale.world_size`` (the benchmark times one process on one device; the whole batch on a
    one-device scale)."""
    return int(bench_cfg.batch_size) // int(bench_cfg.scale.get("world_size") or 1)


def bench_rl_config(variant: str, size: str, tuning: str, bench_cfg):
    """The rl configuration one benchmark row runs (spolab.bench.bench_one) and the memory plan checks
    (spolab.memory.bench_plans): ``variant``'s algorithm and data mix on model ``size`` at the benchmark's
    scale and one device's batch (:func:`bench_batch`), the policy itself sampling (data_mix.sync_every 1:
    no stale copy in memory, the cost of the online setting), LoRA adapters for ``tuning`` lora, in one process (``scale.world_size=1``: the
    benchmark times one device), with the benchmark's own response length, precision and scale placement
    (``bench_cfg``: its configuration, overrides included)."""
    algo_name, mix_name = VARIANTS[variant]
    steps = [f"algo.steps_per_batch={ppo_steps_per_update()}"] if variant == "spo_ppo_steps" else []
    scale = bench_cfg.scale
    placement = [f"scale.{k}={'null' if scale.get(k) is None else scale.get(k)}"
                 for k in ("gpu_memory_gb", "micro_batch_size", "prompt_tokens") if k in scale]
    return load_config("rl", [f"algo={algo_name}", f"data_mix={mix_name}", f"model={size}", f"scale={scale.name}",
                              f"batch_size={bench_batch(bench_cfg)}", f"group_size={bench_cfg.group_size}", "seed=0",
                              "data_mix.sync_every=1", "scale.world_size=1", *placement, *steps,
                              f"task.max_new_tokens={bench_cfg.task.max_new_tokens}",
                              f"precision={bench_cfg.precision}", *(["lora=on"] if tuning == "lora" else [])])


def matmul_gflops(threads: int, device, n: int = 2048, repeats: int = 10) -> float:
    """This machine's measured fp32 matmul throughput (GFLOP/s): the limit reported against."""
    torch.set_num_threads(threads)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts) / 1e9
