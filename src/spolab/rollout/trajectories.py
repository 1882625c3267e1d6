"""One record schema for every trajectory, whoever produced it (docs/design.md §5), and a replay buffer.

A :class:`Trajectory` carries its provenance (``source``, ``policy_version``), the behaviour
log-probs where the producing policy is known (``None`` otherwise: expert data, random
programs), and the frozen reference log-probs once computed (cached, never recomputed).
:func:`collate` pads a list of trajectories into a :class:`Batch` of tensors.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from spolab.jsonl import read_jsonl, record
from spolab.utils import write_jsonl


@dataclass
class Trajectory:
    problem_id: str
    prompt_ids: list[int]
    response_ids: list[int]  # EOS included when the response finished
    reward: float
    success: bool
    source: str  # online | replay | ref_samples | expert | earlier_run | ...
    policy_version: int = -1  # update count of the policy that sampled it; -1 = no known policy
    behaviour_logp: list[float] | None = None  # per response token, under the sampling distribution
    ref_logp: list[float] | None = None  # per response token under π_ref (cached)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> Trajectory:
        return record(Trajectory, d)  # BadRecord naming a missing or unknown field


def save_trajectories(path: str | Path, trajs: list[Trajectory]) -> None:
    write_jsonl(path, (t.to_json() for t in trajs))  # floats round-trip exactly through repr


def load_trajectories(path: str | Path, rebuild: str = "rebuild it with the step that wrote it "
                      "(`snakemake --forcerun <rule>`)") -> list[Trajectory]:
    """The trajectories of a JSON-lines file; a bad line is a one-line BadFile naming file, line and field."""
    return read_jsonl(path, Trajectory.from_json, rebuild=rebuild)


@dataclass
class Batch:
    """Padded tensors of B trajectories (left-padded prompts, right-padded responses)."""

    trajs: list[Trajectory]
    prompt_ids: torch.Tensor  # (B, P)
    prompt_mask: torch.Tensor  # (B, P)
    response_ids: torch.Tensor  # (B, T)
    response_mask: torch.Tensor  # (B, T) float
    reward: torch.Tensor  # (B,)
    behaviour_logp: torch.Tensor | None  # (B, T), None unless every trajectory has one
    ref_logp: torch.Tensor | None  # (B, T), None unless every trajectory has one

    def __len__(self) -> int:
        return len(self.trajs)

    def to(self, device) -> Batch:
        """The same batch with every tensor on ``device``."""
        move = lambda x: None if x is None else x.to(device)  # noqa: E731
        return Batch(self.trajs, move(self.prompt_ids), move(self.prompt_mask), move(self.response_ids),
                     move(self.response_mask), move(self.reward), move(self.behaviour_logp), move(self.ref_logp))

    def select(self, idx: torch.Tensor | list[int]) -> Batch:
        idx = torch.as_tensor(idx, dtype=torch.long)
        pick = lambda x: None if x is None else x[idx]  # noqa: E731
        return Batch([self.trajs[i] for i in idx.tolist()], self.prompt_ids[idx], self.prompt_mask[idx],
                     self.response_ids[idx], self.response_mask[idx], self.reward[idx],
                     pick(self.behaviour_logp), pick(self.ref_logp))


def _pad(rows: list[list], value, left: bool = False, dtype=torch.long) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    out = torch.full((len(rows), T), value, dtype=dtype)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        if not r:
            continue
        sl = slice(T - len(r), T) if left else slice(0, len(r))
        out[i, sl] = torch.tensor(r, dtype=dtype)
        mask[i, sl] = 1
    return out, mask


def collate(trajs: list[Trajectory], pad_id: int) -> Batch:
    p_ids, p_mask = _pad([t.prompt_ids for t in trajs], pad_id, left=True)
    r_ids, r_mask = _pad([t.response_ids for t in trajs], pad_id)
    beh = ref = None
    if all(t.behaviour_logp is not None for t in trajs):
        beh, _ = _pad([t.behaviour_logp for t in trajs], 0.0, dtype=torch.float32)
    if all(t.ref_logp is not None for t in trajs):
        ref, _ = _pad([t.ref_logp for t in trajs], 0.0, dtype=torch.float32)
    reward = torch.tensor([t.reward for t in trajs], dtype=torch.float32)
    return Batch(trajs, p_ids, p_mask, r_ids, r_mask.float(), reward, beh, ref)


class ReplayBuffer:
    """FIFO store of past trajectories with uniform sampling (the paper's replay, docs/design.md §5)."""

    def __init__(self, capacity: int, seed: int = 0):
        if capacity < 1:
            raise ValueError("replay capacity must be >= 1")
        self.capacity = capacity
        self.items: list[Trajectory] = []
        self.rng = random.Random(seed)

    def add(self, trajs: list[Trajectory]) -> None:
        self.items.extend(trajs)
        if len(self.items) > self.capacity:
            del self.items[: len(self.items) - self.capacity]

    def sample(self, n: int) -> list[Trajectory]:
        if not self.items:
            return []
        return [self.items[self.rng.randrange(len(self.items))] for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)
