"""``python -m spolab.diagnostics algo=spo [rl overrides]``: does RL have signal that transfers?

The cross-prompt gradient cosine (issue 12, DESIGN §3): the cosine between the policy gradients
an algorithm computes at the SFT policy on two *disjoint* batches of fresh prompts, next to the
cosine between two independent samplings of the *same* prompts. A task whose reward can improve
the policy in general gives the first a clear positive value; near 0 means every prompt pulls in
its own direction, so updates on RL prompts barely transfer to fresh (test) prompts.

    cos_cross = cos(g(A), g(B)),  A ∩ B = ∅      cos_same = cos(g(A), g'(A)),  fresh samples

where g(·) is the gradient of the algorithm's own loss (its first optimiser step of an update,
before clipping), each batch ``prompts`` prompts × ``group_size`` samples. Nothing is trained.
Prints one line per algorithm and writes ``{out_dir}/grad_cosine.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from spolab.builder import build_rl_run
from spolab.cli import entry
from spolab.rollout.collect import attach_ref_logp, collect
from spolab.rollout.trajectories import collate
from spolab.utils import seed_everything, set_threads
from spolab.validate import validate

log = logging.getLogger(__name__)
PAIRS = 6  # draws of (A, B, A resampled) per run: the SD of cos_cross over them is printed beside its mean


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
                           temperature=1.0, generator=gen, version=0, reward_kind=reward_kind)
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


def run(cfg: DictConfig) -> dict:
    set_threads()
    validate(cfg, "rl")
    seed_everything(cfg.seed)
    r = build_rl_run(cfg, torch.device("cpu"))  # the RL run's algorithm at the SFT policy (Q̂0 of the task's reward)
    res = gradient_cosines(r.algo, r.problems, prompts=cfg.batch_size // cfg.group_size,
                           pairs=PAIRS, group_size=cfg.group_size,
                           max_new_tokens=cfg.task.max_new_tokens, reward_kind=cfg.task.reward, seed=cfg.seed)
    res = {"algo": cfg.algo.name, "sft_dir": str(cfg.sft_dir), **res}
    print(f"{cfg.algo.name}: cos_cross {res['cos_cross']:+.3f} ± {res['cos_cross_sd']:.3f}, cos_same "
          f"{res['cos_same']:+.3f} ± {res['cos_same_sd']:.3f}, reward {res['reward']:.3f} "
          f"({res['pairs']} pairs of {res['prompts']}-prompt batches)")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grad_cosine.json").write_text(json.dumps(res, indent=2))
    return res


main = entry("rl", run)


if __name__ == "__main__":
    main()
