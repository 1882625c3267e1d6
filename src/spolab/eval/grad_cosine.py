"""The cross-prompt gradient cosine: the cosine between the policy gradients an algorithm computes on
two *disjoint* batches of fresh prompts, next to the cosine between two independent samplings of the
*same* prompts (``python -m spolab.diagnostics`` runs it at the SFT policy).

    cos_cross = cos(g(A), g(B)),  A ∩ B = ∅      cos_same = cos(g(A), g'(A)),  fresh samples

where g(·) is the gradient of the algorithm's own loss (its first optimiser step of an update, before
clipping). Nothing is trained.
"""

from __future__ import annotations

import numpy as np
import torch

from spolab.rollout.collect import attach_ref_logp, collect
from spolab.rollout.trajectories import collate


def algorithm_gradient(algo, batch) -> torch.Tensor:
    """The flattened gradient of ``algo``'s loss on ``batch`` at its current weights (no step taken):
    the gradient its first policy optimiser step would apply, before clipping (``Algorithm.first_gradient``)."""
    return algo.first_gradient(batch)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def gradient_cosines(algo, problems, *, prompts: int, pairs: int, group_size: int, max_new_tokens: int,
                     reward_kind: str, seed: int) -> dict[str, float]:
    """Mean and SD over ``pairs`` draws of cos_cross and cos_same (module docstring)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    policy, tok = algo.policy, algo.tok

    def grad(batch_problems):
        trajs, _ = collect(policy, tok, batch_problems, group_size=group_size, max_new_tokens=max_new_tokens,
                           temperature=algo.sampling_temperature, generator=gen, version=0, reward_kind=reward_kind)
        attach_ref_logp(algo.ref, trajs, tok.pad_token_id)
        policy.train()
        return algorithm_gradient(algo, collate(trajs, tok.pad_token_id)), float(np.mean([t.reward for t in trajs]))

    cross, same, rewards = [], [], []
    for _ in range(pairs):
        idx = rng.choice(len(problems), 2 * prompts, replace=False)
        a, b = [problems[i] for i in idx[:prompts]], [problems[i] for i in idx[prompts:]]
        (ga, ra), (gb, _), (ga2, _) = grad(a), grad(b), grad(a)
        cross.append(cosine(ga, gb))
        same.append(cosine(ga, ga2))
        rewards.append(ra)
    return {"cos_cross": float(np.mean(cross)), "cos_cross_sd": float(np.std(cross)),
            "cos_same": float(np.mean(same)), "cos_same_sd": float(np.std(same)),
            "reward": float(np.mean(rewards)), "pairs": pairs, "prompts": prompts}
