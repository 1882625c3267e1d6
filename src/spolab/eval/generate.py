"""Evaluation as three separate steps (docs/design.md §6): generate -> execute -> score.

- :func:`generate` samples n programs per problem under a protocol (n, temperature, top-p).
- :func:`execute` runs every sample on its problem's tests and on the fixed probe inputs
  (its behaviour signature, for functional diversity). Never raises.
- :func:`score_samples` turns executed samples into pass@k and diversity metrics (spolab.eval.diversity:
  among all samples, among correct samples, and per solved problem), with 95 % bootstrap intervals
  over problems.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from tqdm import tqdm

from spolab import dist
from spolab.eval.diversity import problem_diversity
from spolab.eval.passk import bootstrap_ci, pass_at_k_array
from spolab.rollout.sampler import sample_problems, score_groups
from spolab.tasks.base import Task, task_of
from spolab.utils import device_of, generator


@torch.no_grad()
def generate(
    model,
    tokenizer,
    problems: list,
    *,
    n: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int = 1024,
    generator: torch.Generator | None = None,
    ref_model=None,
    progress: bool = True,
    task: Task | None = None,
    score_rows: int | None = None,
) -> list[dict]:
    """n samples per problem. Each record: problem_id, sample, program, n_tokens, finished,
    logprob (sum under the sampling distribution), entropy (sum of per-token policy entropy)
    and, with ``ref_model`` under the policy itself (temperature 1, top-p 1), logprob_policy /
    logprob_ref, the sequence log-probs behind the k1 estimate of KL(π‖π_ref). KL is a property of
    the policy, so tempered or nucleus samples (the paper protocol) carry none. ``score_rows``: π_ref scores
    at most that many sequences per pass (``scale.micro_batch_size``), whole prompts' n samples at a time
    (at least one prompt); None: a sampler chunk at once."""
    task = task_of(problems, task)
    out: list[dict] = []
    bar = tqdm(total=len(problems) * n, desc="eval/generate", disable=not progress, mininterval=2, leave=False)
    for c in sample_problems(model, tokenizer, problems, task.prompt, num_samples=n, max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, generator=generator, batch_size=batch_size):
        ro, texts = c.rollout, c.texts
        chunk = [(p, j) for p in c.problems for j in range(n)]
        extra = {}
        if ref_model is not None and temperature == 1.0 and top_p == 1.0:
            # the samples come from π_θ itself, so their sampling log-probs are log π_θ (the sampler
            # agrees with teacher forcing at T 1); π_ref scores them with one prefill per prompt
            extra["logprob_policy"] = ro.logprobs.sum(-1)
            per = max(1, score_rows // n) if score_rows else len(c.problems)  # prompts per π_ref pass
            extra["logprob_ref"] = torch.cat([
                score_groups(ref_model, c.prompt_ids[i : i + per], c.prompt_mask[i : i + per],
                             ro.response_ids[i * n : (i + per) * n], ro.response_mask[i * n : (i + per) * n], n).sum(-1)
                for i in range(0, len(c.problems), per)])
        for i, ((p, j), text) in enumerate(zip(chunk, texts)):
            rec = {
                "problem_id": p.id,
                "sample": j,
                "program": text,
                "n_tokens": int(ro.response_mask[i].sum()),
                "finished": bool(ro.finished[i]),
                "logprob": float(ro.logprobs[i].sum()),
                "entropy": float(ro.entropy[i].sum()),
            }
            rec.update({k: float(v[i]) for k, v in extra.items()})
            out.append(rec)
        bar.update(len(chunk))
    bar.close()
    return out


def execute(problems: list, samples: list[dict], reward: str = "binary", task: Task | None = None) -> list[dict]:
    """Adds correct / reward / passed / error / signature to each sample (in place, returned): the
    task runs every sample's program on its problem's tests (all at once: a code task in parallel),
    and a correct program's signature is its functional class.

    A sample that hit the length limit without EOS is wrong ("too long"), whatever it parses to.
    """
    if not samples:
        return samples
    task = task_of(problems, task)
    by_id = {p.id: p for p in problems}
    outcomes = task.execute([by_id[s["problem_id"]] for s in samples],
                            [s["program"] if s.get("finished", True) else None for s in samples])
    for s, o in zip(samples, outcomes):
        s["correct"] = o.success
        s["reward"] = o.reward(reward)
        s["passed"] = o.passed
        s["error"] = o.error
        s["signature"] = o.signature
    return samples


PER_SOLVED = ("distinct_correct_per_solved", "functional_classes_per_solved")  # NaN on unsolved problems
NEW_DIVERSITY = (*PER_SOLVED, "effective_programs")  # spolab.eval.diversity's keys scored after the others


def score_samples(
    problems: list, samples: list[dict], ks=(1, 5, 10), prefix: str = "eval", seed: int = 0
) -> tuple[dict, dict]:
    """pass@k and diversity. Returns (metrics, per_problem) where metrics has ``{prefix}/<name>``
    point estimates plus ``{prefix}/<name>_ci_lo|hi`` (95 % bootstrap over problems), and
    ``{prefix}/n_solved``, the problems with at least one correct sample.

    The per-solved keys (:data:`PER_SOLVED`) are NaN on an unsolved problem: their point is the mean
    over the solved problems and their interval a bootstrap over those problems; with none solved
    the key is NaN (``metrics.jsonl`` null, no MLflow point). In ``per_problem`` NaN is ``None``
    (JSON null)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        groups[s["problem_id"]].append(s)
    pids = [p.id for p in problems if p.id in groups]
    if not pids:
        raise ValueError("no samples to score")
    n = np.array([len(groups[i]) for i in pids])
    c = np.array([sum(s["correct"] for s in groups[i]) for i in pids])
    per_problem: dict[str, np.ndarray] = {"n": n.astype(np.float64), "n_correct": c.astype(np.float64)}
    for k in ks:
        per_problem[f"pass@{k}"] = pass_at_k_array(n, c, k)  # raises if k > n
    divs = [
        problem_diversity(
            [s["program"].split() for s in groups[i]],
            [s["correct"] for s in groups[i]],
            [s["signature"] for s in groups[i]],
        )
        for i in pids
    ]
    for key in divs[0]:
        if key not in NEW_DIVERSITY:
            per_problem[key] = np.array([d[key] for d in divs], dtype=np.float64)
    tokens = np.array([sum(s["n_tokens"] for s in groups[i]) for i in pids], dtype=np.float64)
    per_problem["entropy_per_token"] = np.array([sum(s["entropy"] for s in groups[i]) for i in pids]) / tokens
    per_problem["parse_rate"] = np.array([np.mean([s["error"] is None or not s["error"].startswith(("parse", "too", "syntax", "no code"))
                                                   for s in groups[i]]) for i in pids])
    per_problem["mean_length"] = tokens / n
    if "logprob_ref" in samples[0]:
        # k1 estimator of KL(pi || pi_ref) per sequence: E_pi[sum_t log pi - log pi_ref]
        per_problem["kl_ref"] = np.array([np.mean([s["logprob_policy"] - s["logprob_ref"] for s in groups[i]])
                                          for i in pids])
    for key in NEW_DIVERSITY:  # last, so the intervals of the keys above keep their generator draws
        per_problem[key] = np.array([d[key] for d in divs], dtype=np.float64)
    if all("reward" in s for s in samples):  # the task's reward (partial credit with task.reward=fraction); after
        # the keys above, for the same reason: with a binary reward it is pass@1 again
        per_problem["mean_reward"] = np.array([np.mean([s["reward"] for s in groups[i]]) for i in pids])
    rng = np.random.default_rng(seed)
    metrics: dict[str, float] = {f"{prefix}/n_problems": float(len(pids)), f"{prefix}/n_samples": float(n.mean()),
                                 f"{prefix}/n_solved": float((c > 0).sum())}
    for key, vals in per_problem.items():
        if key in ("n", "n_correct"):
            continue  # counts behind pass@k, kept per problem only
        vals = vals[np.isfinite(vals)] if key in PER_SOLVED else vals  # the solved problems
        point, lo, hi = bootstrap_ci(vals, rng, n_boot=1000) if len(vals) else (np.nan, np.nan, np.nan)
        metrics[f"{prefix}/{key}"] = point
        metrics[f"{prefix}/{key}_ci_lo"] = lo
        metrics[f"{prefix}/{key}_ci_hi"] = hi
    return metrics, {"problem_id": pids, **{k: [None if np.isnan(x) else x for x in v.tolist()]
                                            for k, v in per_problem.items()}}


def evaluate_policy(model, tokenizer, problems, protocol, *, max_new_tokens, batch_size=1024, seed=0,
                    prefix="eval", ref_model=None, reward="binary", progress=True, task=None, score_rows=None):
    """generate -> execute -> score in one call (used for periodic validation during training).

    Across processes (spolab.dist) each rank generates and executes its contiguous share of the problems with
    its own generator (seeded by (seed, rank)); the samples are gathered, and every rank scores all of them."""
    task = task_of(problems, task)
    own = dist.shard(problems, even=False)  # every problem in one process
    gen = generator(device_of(model), dist.rank_seed(seed))  # the CPU generator on the CPU: the same draws as before
    samples = generate(model, tokenizer, own, n=protocol.n, temperature=protocol.temperature,
                       top_p=protocol.top_p, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       generator=gen, ref_model=ref_model, progress=progress, task=task,
                       score_rows=score_rows) if own else []
    execute(own, samples, reward, task)
    samples = dist.all_gather_objects(samples)  # in problem order
    metrics, per_problem = score_samples(problems, samples, protocol.ks, prefix=prefix, seed=seed)  # k > n raises
    return metrics, per_problem, samples
