"""Off-policy data sources (docs/design.md §5) and the per-batch mixer.

Every source yields :class:`~spolab.rollout.trajectories.Trajectory` records with the same
schema as fresh samples; only provenance differs:

=============== ============================================ =============== ==================
source          what                                         policy_version  behaviour_logp
=============== ============================================ =============== ==================
replay          the run's own past fresh samples             sampler's       sampler's
expert          the dataset's solution + enumerated solvers  -1              None (no policy)
earlier_run     a finished PPO run's last trajectories       that run's      that run's sampler
other_policy    π_ref sampled at a high temperature          0               at that temperature
decoding        π_ref, greedy with diverse restarts          0               None (deterministic)
random          programs drawn from the DSL grammar          -1              None
=============== ============================================ =============== ==================

Pools are built once per SFT model by ``python -m spolab.sources`` (Snakemake rule
``sources``); earlier_run is the ``trajectories.jsonl`` an RL run dumps when it finishes.
:func:`allocate` turns a data mix into exact per-batch counts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from spolab.rollout.collect import reward_of
from spolab.rollout.sampler import _positions, decode_responses, encode_prompts, sample
from spolab.rollout.trajectories import ReplayBuffer, Trajectory
from spolab.tasks import listdsl as dsl
from spolab.tasks.base import task_of
from spolab.tasks.problems import Problem, random_program
from spolab.utils import device_of

STORED_SOURCES = ("replay", "expert", "earlier_run", "other_policy", "decoding", "random")
POOL_SOURCES = ("expert", "other_policy", "decoding", "random")  # built by spolab.sources


def allocate(batch_size: int, fresh_fraction: float, shares: dict[str, float]) -> dict[str, int]:
    """Exact per-batch counts of a data mix: ``{"fresh": n, source: n, ...}`` summing to
    ``batch_size``. Largest-remainder rounding, so every count is floor or ceil of its share
    and ties go to the order given (fresh first)."""
    want = {"fresh": fresh_fraction * batch_size, **{k: v * batch_size for k, v in shares.items()}}
    counts = {k: int(v) for k, v in want.items()}
    left = batch_size - sum(counts.values())
    for k in sorted(want, key=lambda k: -(want[k] - counts[k]))[:left]:
        counts[k] += 1
    return counts


def _prompt_ids(tok, problem) -> list[int]:
    """The prompt as the sampler encodes it (BOS + prompt tokens, or the chat template; no padding)."""
    ids, mask = encode_prompts(tok, [task_of([problem]).prompt(problem)])
    return ids[0][mask[0].bool()].tolist()


def _traj(tok, problem: Problem, prompt_ids: list[int], program: str, source: str, reward_kind: str, *,
          finished: bool = True, version: int = -1) -> Trajectory:
    """A trajectory for a program text: response ids = the program's tokens + EOS (if finished);
    no behaviour log-probs (no sampling distribution produced it)."""
    response = tok(program, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if finished else [])
    r, ok = reward_of(problem, program, finished, reward_kind)
    return Trajectory(problem.id, prompt_ids, response, r, ok, source, version)


def expert_trajectories(problems: Sequence[Problem], tok, *, per_problem: int, max_len: int,
                        reward_kind: str = "binary") -> list[Trajectory]:
    """The dataset's solution of each problem plus up to ``per_problem - 1`` enumerated
    equivalent programs (≤ ``max_len`` primitives, no dead step), all correct by construction."""
    out = []
    for p in problems:
        programs = [p.program]
        if per_problem > 1:
            for s in dsl.enumerate_solvers(p.all_tests(), max_len, limit=per_problem):
                text = dsl.to_text(s)
                if text not in programs:
                    programs.append(text)
        prompt = _prompt_ids(tok, p)
        out += [_traj(tok, p, prompt, prog, "expert", reward_kind) for prog in programs[:per_problem]]
    return out


def random_trajectories(problems: Sequence[Problem], tok, *, per_problem: int, max_prims: int, seed: int,
                        reward_kind: str = "binary") -> list[Trajectory]:
    """``per_problem`` programs per problem drawn from the DSL grammar (spolab.tasks.problems.random_program)."""
    rng = random.Random(f"{seed}-random-source")
    out = []
    for p in problems:
        prompt = _prompt_ids(tok, p)
        out += [_traj(tok, p, prompt, dsl.to_text(random_program(rng, max_prims)), "random", reward_kind)
                for _ in range(per_problem)]
    return out


def reference_trajectories(problems: Sequence, tok, task, *, per_problem: int,
                           reward_kind: str = "binary") -> list[Trajectory]:
    """The ``expert`` source of a code task: up to ``per_problem`` of each problem's reference
    solutions (the dataset's, as the model should write them: spolab.tasks.base.Task.solutions),
    scored on the problem's tests like any program. Problems without one contribute nothing."""
    out = []
    for p in problems:
        prompt = _prompt_ids(tok, p)
        out += [_traj(tok, p, prompt, prog, "expert", reward_kind) for prog in task.solutions(p)[:per_problem]]
    return out


def foreign_trajectories(problems: Sequence, tok, task, *, per_problem: int, seed: int,
                         reward_kind: str = "binary") -> list[Trajectory]:
    """The ``random`` source of a code task: reference solutions of *other* problems, drawn at random.
    Well-formed code that answers another question: the code-task analogue of a random DSL program
    (almost always wrong, and scored, so the rare accident counts)."""
    rng = random.Random(f"{seed}-random-source")
    pool = [(p.id, prog) for p in problems for prog in task.solutions(p)]
    out = []
    for p in problems:
        others = [prog for pid, prog in pool if pid != p.id]
        if not others:
            continue
        prompt = _prompt_ids(tok, p)
        out += [_traj(tok, p, prompt, rng.choice(others), "random", reward_kind) for _ in range(per_problem)]
    return out


@torch.no_grad()
def decoding_trajectories(model, tok, problems: Sequence[Problem], *, restarts: int, max_new_tokens: int,
                          reward_kind: str = "binary", batch_size: int = 256) -> list[Trajectory]:
    """Greedy decoding with diverse restarts: for each of the ``restarts`` most likely first
    tokens (EOS excluded), force it and continue greedily. Deterministic, so no behaviour
    log-probs: the records say ``behaviour_logp=None``."""
    model.eval()
    out = []
    near_greedy = 1e-4  # temperature: the sampler's argmax (ties have probability ~0 with float logits)
    for start in range(0, len(problems), batch_size):
        chunk = list(problems[start : start + batch_size])
        ids, mask = encode_prompts(tok, [task_of(chunk).prompt(p) for p in chunk])
        ids, mask = ids.to(device_of(model)), mask.to(device_of(model))
        logits = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask)).logits[:, -1]  # (B, V)
        logits[:, tok.eos_token_id] = float("-inf")
        first = logits.topk(restarts, dim=-1).indices  # (B, R)
        # prompts extended by each forced first token: (B * R, P + 1)
        ext_ids = torch.cat([ids.repeat_interleave(restarts, 0), first.reshape(-1, 1)], dim=1)
        ext_mask = torch.cat([mask.repeat_interleave(restarts, 0), torch.ones_like(first.reshape(-1, 1))], dim=1)
        ro = sample(model, ext_ids, ext_mask, max_new_tokens=max_new_tokens - 1, eos_id=tok.eos_token_id,
                    pad_id=tok.pad_token_id, temperature=near_greedy)
        # the forced first token and its greedy continuation, decoded as one response (a subword
        # tokenizer joins them without a space, the miniature's word-level one with one)
        whole_ids = torch.cat([first.reshape(-1, 1), ro.response_ids], dim=1)
        whole_mask = torch.cat([torch.ones_like(first.reshape(-1, 1)), ro.response_mask], dim=1)
        for i, program in enumerate(decode_responses(tok, whole_ids, whole_mask)):
            p = chunk[i // restarts]
            prompt = ids[i // restarts][mask[i // restarts].bool()].tolist()
            out.append(_traj(tok, p, prompt, program, "decoding", reward_kind, finished=bool(ro.finished[i]),
                             version=0))
    return out


class SourceMixer:
    """Draws the stored part of each batch: uniform samples of each source's pool, in the
    exact counts of :func:`allocate`. ``replay`` is the run's own :class:`ReplayBuffer`."""

    def __init__(self, pools: dict[str, list[Trajectory]], replay: ReplayBuffer, seed: int):
        empty = [k for k, v in pools.items() if k != "replay" and not v]
        if empty:
            raise ValueError(f"stored source(s) {empty} have no trajectories")
        self.pools, self.replay = pools, replay
        self.rng = random.Random(f"{seed}-mixer")

    def draw(self, counts: dict[str, int]) -> dict[str, list[Trajectory]]:
        out = {}
        for src, n in counts.items():
            if src == "fresh" or n == 0:
                continue
            if src == "replay":
                out[src] = self.replay.sample(n)  # empty until the first update has added samples
            else:
                pool = self.pools[src]
                out[src] = [pool[self.rng.randrange(len(pool))] for _ in range(n)]
        return out
