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
