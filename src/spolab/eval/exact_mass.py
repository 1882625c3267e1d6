"""Exact success mass: the policy's probability of writing a correct program, by enumeration.

For a task that can list every correct program of a problem up to a size (``Task.enumerates_solutions``:
the list-DSL miniature, ``spolab.tasks.listdsl.enumerate_solvers`` with dead steps kept), each program y
of the enumerated set S(x) is teacher-forced under the policy, EOS included, exactly as the sampler
would have to produce it (:func:`sequence_logprobs`, the prompt encoded as :func:`~spolab.rollout.sampler.
encode_prompts` encodes it, the response as :func:`~spolab.rollout.sampler.encode_responses`):

    π_θ(y | x) = Π_{t=1}^{|y|+1} softmax(f_θ(x, y_<t))[y_t],      y_{|y|+1} = EOS

the probability that sampling at temperature 1, top-p 1 (the ``policy`` protocol) returns y and stops.
A program of more than ``max_new_tokens - 1`` tokens cannot be sampled to its EOS, so it has mass 0.
Equivalent programs (different token sequences, one behaviour) are different outcomes of the sampler
and each counts. Per problem (:func:`problem_metrics`, pure):

    P_θ(x)      = Σ_{y ∈ S(x)} π_θ(y | x)                          success_mass
    pass@k      = 1 − (1 − P_θ(x))^k                                pass@k (k independent samples)
    q_θ(y)      = π_θ(y | x) / P_θ(x),  y ∈ S(x)                    π_θ restricted to its correct programs
    H(q_θ)      = −Σ_y q_θ(y) log q_θ(y)                            entropy_correct (nats)
    KL_correct  = Σ_y q_ref(y) (log q_ref(y) − log q_θ(y))          kl_ref_correct: KL(π_ref|correct ‖ π_θ|correct)

π_ref is the SFT policy (``ref_model_dir``); KL_correct is 0 when θ = ref. ``P`` is a lower bound of the
policy's true success probability: correct programs outside S(x) (longer than the enumeration) are
missed. :func:`coverage_counts` measures how much: the share of the *sampled* correct programs (the
``policy`` protocol's samples) that S(x) holds.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import torch

from spolab.eval.passk import bootstrap_ci
from spolab.rollout.sampler import decode_responses, encode_prompts, encode_responses, score_groups
from spolab.utils import device_of

log = logging.getLogger(__name__)

PER_PROBLEM_KEYS = ("success_mass", "entropy_correct", "kl_ref_correct", "n_programs", "coverage")  # + pass@k


@torch.no_grad()
def sequence_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                      responses: Sequence[Sequence[Sequence[int]]], *, pad_id: int,
                      batch_size: int = 1024) -> list[np.ndarray]:
    """Teacher-forced log π(r | prompt) = Σ_t log softmax(logits_t)[r_t] of token sequences, per prompt.

    ``prompt_ids`` / ``prompt_mask``: (U, P), one left-padded row per prompt (as ``encode_prompts``
    makes them); ``responses[u]``: the token-id sequences scored after prompt u, each exactly as it would
    be generated (append EOS to a finished response: its probability is part of the sequence's).
    Returns one float64 array per prompt. Sequences go through the model ``batch_size`` at a time, each
    prompt prefilled once per batch (spolab.rollout.sampler.score_groups: one forward per sequence, no
    grad, on the model's device and in its dtype; the caller's autocast applies)."""
    device = device_of(model)
    rows = [(u, r) for u, rs in enumerate(responses) for r in rs]
    flat = np.zeros(len(rows), dtype=np.float64)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        groups = [(u, len(list(g))) for u, g in itertools.groupby(u for u, _ in chunk)]  # a prompt's rows
        uniq, counts = [u for u, _ in groups], [n for _, n in groups]  # are consecutive (``rows``' order)
        T = max(len(r) for _, r in chunk)
        ids = torch.full((len(chunk), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), T), dtype=torch.long)
        for i, (_, r) in enumerate(chunk):
            ids[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
            mask[i, : len(r)] = 1
        sel = torch.as_tensor(uniq)
        lp = score_groups(model, prompt_ids[sel].to(device), prompt_mask[sel].to(device), ids.to(device),
                          mask.to(device), counts)
        flat[start : start + len(chunk)] = lp.sum(-1).double().cpu().numpy()
    out, i = [], 0
    for rs in responses:
        out.append(flat[i : i + len(rs)])
        i += len(rs)
    return out


def program_logprobs(model, tokenizer, prompts: Sequence[str], programs: Sequence[Sequence[str]], *,
                     max_new_tokens: int, batch_size: int = 1024) -> list[np.ndarray]:
    """log π(program + EOS | prompt) of each program text of each prompt (:func:`sequence_logprobs`).

    The prompt text is encoded as the sampler encodes it (BOS, or the chat template of a chat
    tokenizer); each program as ``encode_responses`` encodes a response, EOS appended. A program must
    decode back to its own text (it is then the token sequence whose sampling yields it; a word outside
    the vocabulary raises ``ValueError``). One of more than ``max_new_tokens`` tokens with its EOS
    cannot be sampled to its end: its log-prob is −inf."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, list(prompts))
    responses, too_long = [], []
    for progs in programs:
        if not progs:
            responses.append([])
            too_long.append(np.zeros(0, dtype=bool))
            continue
        ids, mask = encode_responses(tokenizer, list(progs), add_eos=True)
        back = decode_responses(tokenizer, ids, mask)
        bad = [p for p, b in zip(progs, back) if p != b]
        if bad:
            raise ValueError(f"program {bad[0]!r} does not survive tokenisation (decodes as something else)")
        rows = [r[: int(m.sum())] for r, m in zip(ids.tolist(), mask)]
        too_long.append(np.array([len(r) > max_new_tokens for r in rows]))
        responses.append([r for r in rows if len(r) <= max_new_tokens])
    scored = sequence_logprobs(model, prompt_ids, prompt_mask, responses, pad_id=tokenizer.pad_token_id,
                               batch_size=batch_size)
    out = []
    for lp, long in zip(scored, too_long):
        full = np.full(len(long), -np.inf)
        full[~long] = lp
        out.append(full)
    return out


def _logsumexp(x: np.ndarray) -> float:
    if len(x) == 0 or not np.isfinite(x).any():
        return -math.inf
    m = float(np.max(x))
    return m + math.log(float(np.exp(x - m).sum()))


def problem_metrics(logp: np.ndarray, ref_logp: np.ndarray | None = None, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """The exact metrics of one problem from the log-probs of its enumerated correct programs (pure).

    ``logp[i]`` = log π_θ(y_i | x) and ``ref_logp[i]`` = log π_ref(y_i | x) (sequence log-probs, EOS
    included; −inf for a program the sampler cannot finish). With S the set of programs::

        success_mass    P = Σ_i π_θ(y_i)                   (clipped to [0, 1] against float rounding)
        pass@k          1 − (1 − P)^k                      for each k of ``ks``
        entropy_correct H(q) = −Σ_i q_i log q_i,           q_i = π_θ(y_i) / P
        kl_ref_correct  Σ_i r_i (log r_i − log q_i),       r_i = π_ref(y_i) / P_ref  (only with ``ref_logp``)
        n_programs      |S|

    With P = 0 (no program, or none the sampler can finish) the entropy and KL are NaN."""
    logp = np.asarray(logp, dtype=np.float64)
    log_p = _logsumexp(logp)
    p = min(1.0, math.exp(log_p)) if math.isfinite(log_p) else 0.0
    out: dict[str, float] = {"success_mass": p}
    for k in ks:
        out[f"pass@{k}"] = 1.0 if p >= 1.0 else float(-math.expm1(k * math.log1p(-p)))
    if p > 0:
        fin = np.isfinite(logp)
        log_q = logp[fin] - log_p
        out["entropy_correct"] = float(-(np.exp(log_q) * log_q).sum())
    else:
        out["entropy_correct"] = math.nan
    if ref_logp is not None:
        ref_logp = np.asarray(ref_logp, dtype=np.float64)
        if ref_logp.shape != logp.shape:
            raise ValueError(f"ref_logp has shape {ref_logp.shape}, logp {logp.shape}: one log-prob per program")
        log_ref = _logsumexp(ref_logp)
        if p > 0 and math.isfinite(log_ref):
            fin = np.isfinite(ref_logp)  # where the reference has mass, θ has it too (same finishable set)
            log_r, log_q = ref_logp[fin] - log_ref, logp[fin] - log_p
            out["kl_ref_correct"] = float((np.exp(log_r) * (log_r - log_q)).sum())
        else:
            out["kl_ref_correct"] = math.nan
    out["n_programs"] = float(len(logp))
    return out


def coverage_counts(enumerated: set[str], sampled_correct: Sequence[str]) -> tuple[int, int]:
    """(how many of the sampled correct programs the enumeration holds, how many there are)."""
    return sum(s in enumerated for s in sampled_correct), len(sampled_correct)


def exact_evaluation(model, tokenizer, task, problems: Sequence, samples: Sequence[dict], *, ks: Sequence[int],
                     max_len: int | None, max_new_tokens: int, batch_size: int = 1024, ref_model=None,
                     ref_is_model: bool = False, prefix: str = "eval", seed: int = 0) -> tuple[dict, dict]:
    """Enumerate every problem's correct programs (``task.enumerate_solutions``), teacher-force them
    under the policy (and π_ref: ``ref_model``, or the policy itself when ``ref_is_model``), and return
    (metrics, per_problem) as :func:`spolab.eval.generate.score_samples` does: ``{prefix}/exact/<key>``
    means over problems with 95 % bootstrap intervals (``_ci_lo`` / ``_ci_hi``), and per problem the
    values under ``exact/<key>`` (None where NaN).

    ``samples`` are the policy protocol's executed samples: ``exact/coverage`` is, per problem, the
    share of its correct samples whose program is in the enumeration (None when none is correct), and
    over problems the pooled share Σ held / Σ correct (its interval a bootstrap over problems)."""
    if not problems:
        return {}, {}
    t0 = time.perf_counter()
    enumerated = [task.enumerate_solutions(p, max_len) for p in problems]
    t_enum = time.perf_counter() - t0
    prompts = [task.prompt(p) for p in problems]
    logp = program_logprobs(model, tokenizer, prompts, enumerated, max_new_tokens=max_new_tokens,
                            batch_size=batch_size)
    ref_logp = None
    if ref_is_model:
        ref_logp = logp
    elif ref_model is not None:
        ref_logp = program_logprobs(ref_model, tokenizer, prompts, enumerated, max_new_tokens=max_new_tokens,
                                    batch_size=batch_size)
    correct: dict[str, list[str]] = {p.id: [] for p in problems}
    for s in samples:
        if s["correct"] and s["problem_id"] in correct:
            correct[s["problem_id"]].append(s["program"])
    rows, held, total = [], [], []
    for i, p in enumerate(problems):
        m = problem_metrics(logp[i], None if ref_logp is None else ref_logp[i], ks)
        h, n = coverage_counts(set(enumerated[i]), correct[p.id])
        m["coverage"] = h / n if n else math.nan
        held.append(h)
        total.append(n)
        rows.append(m)
    per_problem = {f"exact/{k}": [None if math.isnan(r[k]) else r[k] for r in rows] for k in rows[0]}
    rng = np.random.default_rng(seed)
    metrics: dict[str, float] = {}
    for key in rows[0]:
        if key == "coverage":
            continue
        vals = np.array([r[key] for r in rows], dtype=np.float64)
        vals = vals[np.isfinite(vals)]  # entropy / KL: the problems with P > 0
        point, lo, hi = bootstrap_ci(vals, rng, n_boot=1000) if len(vals) else (math.nan, math.nan, math.nan)
        metrics.update({f"{prefix}/exact/{key}": point, f"{prefix}/exact/{key}_ci_lo": lo,
                        f"{prefix}/exact/{key}_ci_hi": hi})
    counts = np.array([(h, n) for h, n in zip(held, total) if n], dtype=np.float64).reshape(-1, 2)
    if len(counts):
        point, lo, hi = bootstrap_ci(counts, rng, n_boot=1000, stat=lambda a: a[:, 0].sum() / a[:, 1].sum())
    else:
        point = lo = hi = math.nan
    metrics.update({f"{prefix}/exact/coverage": point, f"{prefix}/exact/coverage_ci_lo": lo,
                    f"{prefix}/exact/coverage_ci_hi": hi})
    wall = time.perf_counter() - t0
    sizes = [len(e) for e in enumerated]
    log.info("%s exact success mass: %d problems, %d programs (per problem min %d, median %g, max %d), "
             "enumeration %.1f s, total %.1f s; coverage of the sampled correct programs %.4f (%d of %d)",
             prefix, len(problems), sum(sizes), min(sizes), float(np.median(sizes)), max(sizes), t_enum, wall,
             point, int(sum(held)), int(sum(total)))
    return metrics, per_problem
