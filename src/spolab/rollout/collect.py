"""Sample trajectories for problems, score them, and cache frozen reference log-probs."""

from __future__ import annotations

import torch

from spolab.rollout.sampler import sample_problems, score
from spolab.rollout.trajectories import Trajectory, collate
from spolab.tasks.base import Task, task_of
from spolab.utils import device_of


def reward_of(problem, program: str, finished: bool, kind: str, task: Task | None = None) -> tuple[float, bool]:
    """(reward, success) of a response; unfinished responses (no EOS) score 0."""
    o = task_of([problem], task).execute([problem], [program if finished else None])[0]
    return o.reward(kind), o.success


@torch.no_grad()
def collect(model, tokenizer, problems: list, *, group_size: int, max_new_tokens: int,
            temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None,
            source: str = "online", version: int = -1, reward_kind: str = "binary",
            batch_size: int = 1024, task: Task | None = None) -> tuple[list[Trajectory], dict]:
    """``group_size`` samples per problem, consecutive (GRPO/RLOO groups). Returns the
    trajectories (behaviour log-probs = the sampling distribution's) and rollout stats. The task
    (default: the problems' own, spolab.tasks.base.task_of) renders the prompts and runs the
    programs, a chunk's at once."""
    if not problems:
        return [], {"rollout/entropy_per_token": 0.0, "rollout/response_len": 0.0}
    task = task_of(problems, task)
    out: list[Trajectory] = []
    ent_sum, tok_sum = 0.0, 0
    for c in sample_problems(model, tokenizer, problems, task.prompt, num_samples=group_size,
                             max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             generator=generator, batch_size=batch_size):
        ro, texts = c.rollout, c.texts
        chunk = [p for p in c.problems for _ in range(group_size)]
        ids, mask = ro.prompt_ids, ro.prompt_mask  # (B, P): each row's prompt
        ent_sum += float(ro.entropy.sum())
        tok_sum += int(ro.response_mask.sum())
        finished = ro.finished.tolist()
        outcomes = task.execute(chunk, [t if f else None for t, f in zip(texts, finished)])
        for i, (p, o) in enumerate(zip(chunk, outcomes)):
            n = int(ro.response_mask[i].sum())
            prompt = ids[i][mask[i].bool()].tolist()
            out.append(Trajectory(p.id, prompt, ro.response_ids[i, :n].tolist(), o.reward(reward_kind), o.success,
                                  source, version, behaviour_logp=ro.logprobs[i, :n].tolist()))
    stats = {"rollout/entropy_per_token": ent_sum / max(tok_sum, 1),
             "rollout/response_len": tok_sum / max(len(out), 1)}
    return out, stats


def merge_rollout_stats(parts: list[tuple[int, dict]]) -> dict:
    """The rollout statistics of :func:`collect` over several calls' samples (the ranks of a data-parallel
    run), from each call's ``(trajectories, stats)``: the response length weighted by trajectories, the
    entropy per token by tokens."""
    n = sum(k for k, _ in parts)
    tokens = [k * s["rollout/response_len"] for k, s in parts]
    return {"rollout/entropy_per_token": sum(t * s["rollout/entropy_per_token"] for t, (_, s) in zip(tokens, parts))
            / max(sum(tokens), 1),
            "rollout/response_len": sum(tokens) / max(n, 1)}


@torch.no_grad()
def attach_ref_logp(ref_model, trajs: list[Trajectory], pad_id: int, batch_size: int = 1024) -> None:
    """Fill ``ref_logp`` of trajectories that lack it (computed once, then cached on the record)."""
    todo = [t for t in trajs if t.ref_logp is None]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        b = collate(chunk, pad_id)
        dev = device_of(ref_model)
        lp = score(ref_model, b.prompt_ids.to(dev), b.prompt_mask.to(dev), b.response_ids.to(dev),
                   b.response_mask.long().to(dev))
        for i, t in enumerate(chunk):
            t.ref_logp = lp[i, : len(t.response_ids)].tolist()
