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

Enumerating S(x) and running π_ref are the same work for every policy evaluated at a scale: an
evaluation writes the programs and its policy's log-probs (:func:`write_logprobs`,
``exact_logprobs.jsonl``), and an evaluation against the same π_ref reads that file of π_ref's own
evaluation (:class:`RefLogprobs`) instead of doing both again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spolab.atomic import sha256_file
from spolab.errors import ConfigError
from spolab.eval.passk import bootstrap_ci
from spolab.jsonl import BadFile, check_manifest, read_jsonl, record, write_manifest
from spolab.rollout.sampler import encode_prompts, process_logits, response_token_ids
from spolab.utils import device_of, write_jsonl

log = logging.getLogger(__name__)

PER_PROBLEM_KEYS = ("success_mass", "entropy_correct", "kl_ref_correct", "n_programs", "coverage")  # + pass@k
MAX_POSITIONS = 2048  # positions (prompt + tree nodes, padding included) per forward of sequence_logprobs: on one
# CPU thread small forwards are fastest (the s model, default test split: 2048 ≈ 1024 < 4096 < 8192 in time)
MAX_NODES = 256  # tree nodes per row: longer rows repeat the prompt less, but attention grows with the square


def _prefix_tree(seqs: Sequence[Sequence[int]]) -> tuple[list[int], list[int], list[int], list[int], list[list[int]]]:
    """The prefix tree of the tokens a model reads to score ``seqs``: each sequence but its last token.

    Returns its nodes in depth-first preorder: their tokens, parents (-1: the prompt), depths (from 1)
    and subtree ends (node v's descendants are the nodes v+1 .. end_v - 1); and, per sequence, the nodes
    it passes: its token k > 0 is predicted at node ``paths[i][k - 1]``, its first token at the prompt.
    Sorting the sequences lists each prefix once, before its extensions."""
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    paths: list[list[int]] = [[] for _ in seqs]
    prev: tuple[int, ...] = ()
    prev_path: list[int] = []
    for i in sorted(range(len(seqs)), key=lambda i: tuple(seqs[i][:-1])):
        fed = tuple(seqs[i][:-1])
        k, n = 0, min(len(fed), len(prev))
        while k < n and fed[k] == prev[k]:
            k += 1
        path = prev_path[:k]
        for d in range(k, len(fed)):
            tokens.append(fed[d])
            parents.append(path[-1] if path else -1)
            depths.append(d + 1)
            path.append(len(tokens) - 1)
        paths[i], prev, prev_path = path, fed, path
    ends, open_ = [len(tokens)] * len(tokens), []  # a subtree ends at the next node no deeper than its root
    for v, d in enumerate(depths):
        while open_ and depths[open_[-1]] >= d:
            ends[open_.pop()] = v
        open_.append(v)
    return tokens, parents, depths, ends, paths


@torch.inference_mode()
def sequence_logprobs(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                      responses: Sequence[Sequence[Sequence[int]]], *, pad_id: int,
                      max_positions: int = MAX_POSITIONS, max_nodes: int = MAX_NODES) -> list[np.ndarray]:
    """Teacher-forced log π(r | prompt) = Σ_t log softmax(logits_t)[r_t] of token sequences, per prompt.

    ``prompt_ids`` / ``prompt_mask``: (U, P), one left-padded row per prompt (as ``encode_prompts``
    makes them); ``responses[u]``: the token-id sequences scored after prompt u, each exactly as it would
    be generated (append EOS to a finished response: its probability is part of the sequence's).
    Returns one float64 array per prompt (the float32 log-probs of the tokens, summed in float64).

    A prompt's sequences share their prefixes (``sort | head`` and ``sort | last`` both read ``sort``
    and ``|``): each distinct prefix is one position of one forward pass (:func:`_prefix_tree`; about
    3x fewer positions than one row per sequence on the list DSL), its next-token distribution read by
    every sequence that passes through it. A row of a forward is the prompt's real tokens (padding
    dropped) then a slice of at most ``max_nodes`` tree nodes in preorder, preceded by the nodes above
    the slice; a 4-D attention mask lets each node see the prompt, its ancestors and itself (tree
    attention), and its position id is the prompt length + its depth - 1, as when the sequence is fed
    whole. Rows go through the model sorted by length, at most ``max_positions`` positions (padding
    included) per forward. Equal to teacher-forcing each sequence alone up to float rounding
    (tests/test_exact_mass.py); deterministic: the same inputs give the same bits. No grad, on the
    model's device and in its dtype (the caller's autocast applies); the model's attention must be
    ``sdpa`` or ``eager`` (what accepts a custom 4-D mask)."""
    device = device_of(model)
    attn = getattr(model.config, "_attn_implementation", None) or "sdpa"
    if attn not in ("sdpa", "eager"):
        raise ValueError(f"sequence_logprobs needs the sdpa or eager attention (a 4-D tree mask), not {attn!r}")
    prompts = [ids[m.bool()].tolist() for ids, m in zip(prompt_ids.cpu(), prompt_mask.cpu())]
    rows: list[tuple[int, list[int], list[int], list[int]]] = []  # (prompt, node tokens, depths, subtree ends)
    at_row, at_col, target, seq_of = [], [], [], []  # per scored token, in (sequence, position) order
    n_seq = 0
    for u, rs in enumerate(responses):
        if not len(rs):
            continue
        tokens, parents, depths, ends, paths = _prefix_tree(rs)
        first, where = len(rows), []  # node -> (row, column among the row's nodes)
        for s in range(0, max(len(tokens), 1), max_nodes):  # one row holds the prompt alone when no node
            e = min(s + max_nodes, len(tokens))
            above, a = [], parents[s] if e > s else -1
            while a >= 0:  # in preorder every ancestor of a slice's node outside it is an ancestor of its first
                above.append(a)
                a = parents[a]
            nodes, m = above[::-1] + list(range(s, e)), len(above)
            # the row's columns: the nodes above the slice (all ancestors of its first node), then the slice;
            # node v's descendants in the row end at column m + min(e, end_v) - s
            rows.append((u, [tokens[v] for v in nodes], [depths[v] for v in nodes],
                         [m + min(e, ends[v]) - s for v in nodes]))
            where.extend((len(rows) - 1, m + v - s) for v in range(s, e))
        for i, r in enumerate(rs):
            for k, t in enumerate(r):
                row, c = (first, -1) if k == 0 else where[paths[i][k - 1]]  # -1: the prompt's last token
                at_row.append(row)
                at_col.append(c)
                target.append(t)
                seq_of.append(n_seq + i)
        n_seq += len(rs)
    at_row_a, at_col_a = np.asarray(at_row, dtype=np.int64), np.asarray(at_col, dtype=np.int64)
    target_a = np.asarray(target, dtype=np.int64)
    token_logp = np.zeros(len(target_a), dtype=np.float64)
    by_row = np.argsort(at_row_a, kind="stable")
    bounds = np.searchsorted(at_row_a[by_row], np.arange(len(rows) + 1))
    lens = [len(prompts[u]) + len(toks) for u, toks, _, _ in rows]
    order = sorted(range(len(rows)), key=lambda r: lens[r])
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * lens[order[stop]] <= max_positions:
            stop += 1
        batch = order[start:stop]
        R, L = len(batch), lens[batch[-1]]
        ids = np.full((R, L), pad_id, dtype=np.int64)
        pos = np.zeros((R, L), dtype=np.int64)
        end = np.tile(np.arange(1, L + 1, dtype=np.int64), (R, 1))  # padding: sees itself only
        flat, scored = [], []
        for i, r in enumerate(batch):
            u, toks, deps, ends = rows[r]
            p, n = len(prompts[u]), len(toks)
            ids[i, :p], ids[i, p : p + n] = prompts[u], toks
            pos[i, :p], pos[i, p : p + n] = np.arange(p), np.asarray(deps, dtype=np.int64) + (p - 1)
            end[i, :p], end[i, p : p + n] = p + n, np.asarray(ends, dtype=np.int64) + p
            j = by_row[bounds[r] : bounds[r + 1]]
            scored.append(j)
            flat.append(i * L + np.where(at_col_a[j] < 0, p - 1, p + at_col_a[j]))
        # position q sees position k iff k <= q < end_k: the prompt causally, a node the whole prompt, its
        # ancestors and itself (a subtree is a preorder interval); an additive mask (for sdpa and eager)
        col = torch.arange(L)
        sees = (col[None, None, :] <= col[None, :, None]) & (col[None, :, None] < torch.from_numpy(end)[:, None, :])
        mask = torch.zeros((R, 1, L, L)).masked_fill_(~sees[:, None], torch.finfo(torch.float32).min)
        logits = model(input_ids=torch.from_numpy(ids).to(device), attention_mask=mask.to(device),
                       position_ids=torch.from_numpy(pos).to(device)).logits
        j = np.concatenate(scored)
        where_t, inverse = torch.unique(torch.from_numpy(np.concatenate(flat)).to(device), return_inverse=True)
        logp = process_logits(logits.reshape(R * L, -1)[where_t], 1.0, 1.0)  # each scored position once
        token_logp[j] = logp[inverse, torch.from_numpy(target_a[j]).to(device)].double().cpu().numpy()
        start = stop
    total = np.bincount(np.asarray(seq_of, dtype=np.int64), weights=token_logp, minlength=n_seq)
    out, i = [], 0
    for rs in responses:
        out.append(total[i : i + len(rs)])
        i += len(rs)
    return out


def program_logprobs(model, tokenizer, prompts: Sequence[str], programs: Sequence[Sequence[str]], *,
                     max_new_tokens: int, max_positions: int = MAX_POSITIONS) -> list[np.ndarray]:
    """log π(program + EOS | prompt) of each program text of each prompt (:func:`sequence_logprobs`).

    The prompt text is encoded as the sampler encodes it (BOS, or the chat template of a chat
    tokenizer); each program as ``encode_responses`` encodes a response, EOS appended
    (``response_token_ids``, one tokenizer call for every program). A program must decode back to its
    own text (it is then the token sequence whose sampling yields it; a word outside the vocabulary
    raises ``ValueError``). One of more than ``max_new_tokens`` tokens with its EOS cannot be sampled
    to its end: its log-prob is −inf."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, list(prompts))
    flat = [p for progs in programs for p in progs]
    ids = response_token_ids(tokenizer, flat, add_eos=True)
    back = tokenizer.batch_decode([np.asarray(r[:-1]) for r in ids], skip_special_tokens=False) if ids else []
    bad = [p for p, b in zip(flat, back) if p != b]
    if bad:
        raise ValueError(f"program {bad[0]!r} does not survive tokenisation (decodes as something else)")
    responses, too_long, i = [], [], 0
    for progs in programs:
        rows, i = ids[i : i + len(progs)], i + len(progs)
        too_long.append(np.array([len(r) > max_new_tokens for r in rows], dtype=bool))
        responses.append([r for r in rows if len(r) <= max_new_tokens])
    scored = sequence_logprobs(model, prompt_ids, prompt_mask, responses, pad_id=tokenizer.pad_token_id,
                               max_positions=max_positions)
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
                     max_len: int | None, max_new_tokens: int, ref_model=None, ref_is_model: bool = False,
                     programs: Sequence[Sequence[str]] | None = None, ref_logp: Sequence[np.ndarray] | None = None,
                     prefix: str = "eval", seed: int = 0) -> tuple[dict, dict, list[list[str]], list[np.ndarray]]:
    """Enumerate every problem's correct programs (``task.enumerate_solutions``), teacher-force them
    under the policy (and π_ref: ``ref_model``, or the policy itself when ``ref_is_model``), and return
    (metrics, per_problem, programs, logp): metrics and per-problem values as
    :func:`spolab.eval.generate.score_samples` returns them (``{prefix}/exact/<key>`` means over
    problems with 95 % bootstrap intervals, ``_ci_lo`` / ``_ci_hi``; per problem the values under
    ``exact/<key>``, None where NaN), then each problem's programs and the policy's log-prob of each.

    ``programs`` (per problem, as ``enumerate_solutions`` lists them) replaces the enumeration, and
    ``ref_logp`` (aligned with them) π_ref's forward passes: both are what an evaluation of π_ref
    wrote (:class:`RefLogprobs`), so the metrics are the same bits as computing them here.

    ``samples`` are the policy protocol's executed samples: ``exact/coverage`` is, per problem, the
    share of its correct samples whose program is in the enumeration (None when none is correct), and
    over problems the pooled share Σ held / Σ correct (its interval a bootstrap over problems)."""
    if not problems:
        return {}, {}, [], []
    t0 = time.perf_counter()
    if programs is None:
        enumerated = [task.enumerate_solutions(p, max_len) for p in problems]
    else:
        enumerated = [list(progs) for progs in programs]
    t_enum = time.perf_counter() - t0
    prompts = [task.prompt(p) for p in problems]
    logp = program_logprobs(model, tokenizer, prompts, enumerated, max_new_tokens=max_new_tokens)
    t_policy = time.perf_counter() - t0 - t_enum
    ref_how = "none"
    if ref_logp is not None:
        ref_logp, ref_how = [np.asarray(r, dtype=np.float64) for r in ref_logp], "given"
    elif ref_is_model:
        ref_logp, ref_how = logp, "the policy's"
    elif ref_model is not None:
        ref_logp, ref_how = program_logprobs(ref_model, tokenizer, prompts, enumerated,
                                             max_new_tokens=max_new_tokens), "forward"
    t_ref = time.perf_counter() - t0 - t_enum - t_policy
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
             "%s %.1f s, policy forward %.1f s, π_ref %.1f s (%s), total %.1f s; coverage of the sampled "
             "correct programs %.4f (%d of %d)",
             prefix, len(problems), sum(sizes), min(sizes), float(np.median(sizes)), max(sizes),
             "enumeration" if programs is None else "programs given", t_enum, t_policy, t_ref, ref_how, wall, point,
             int(sum(held)), int(sum(total)))
    return metrics, per_problem, enumerated, logp


# ------------------------------------------------------------------------ the per-program log-probs file

LOGPROBS_FILE = "exact_logprobs.jsonl"  # in every evaluation's out_dir (spolab.evaluate)
LOGPROBS_FORMAT = "spolab.exact_logprobs/1"


@dataclass(frozen=True)
class LogprobsHeader:
    """The first line of ``exact_logprobs.jsonl``: what its log-probs were computed from, and how."""

    format: str  # LOGPROBS_FORMAT
    model_dir: str  # the policy scored (where it was: informative; weights_sha256 identifies it)
    model_sha256: str  # weights_sha256(model_dir)
    max_len: int  # the enumeration's size (Task.enumeration_size of exact_mass.max_len)
    max_new_tokens: int  # programs longer than this with their EOS have log-prob −inf (null)
    precision: str  # fp32 | bf16: the forward passes' precision
    device: str  # cpu | cuda: where they ran
    splits: dict  # split -> {"data_sha256": sha256 of <data_dir>/<split>.jsonl, "problems": how many it holds}

    def __post_init__(self):
        if self.format != LOGPROBS_FORMAT:
            raise ValueError(f"format {self.format!r} is not {LOGPROBS_FORMAT!r}")
        if not isinstance(self.splits, dict):
            raise ValueError(f"splits must map each split to its data_sha256 and problems, not {self.splits!r}")


@dataclass(frozen=True)
class ProblemLogprobs:
    """One problem of one split: its enumerated programs, in enumeration order, and the policy's
    log π(program + EOS | prompt) of each (null: −inf, a program the sampler cannot finish)."""

    split: str
    problem_id: str
    programs: list
    logp: list

    def __post_init__(self):
        if len(self.programs) != len(self.logp):
            raise ValueError(f"{len(self.programs)} programs but {len(self.logp)} log-probs")

    def logp_array(self) -> np.ndarray:
        return np.array([-math.inf if v is None else v for v in self.logp], dtype=np.float64)


def weights_sha256(model_dir: str | Path) -> str:
    """One sha256 over a saved model's weight files (``*.safetensors``, ``*.bin``: names and contents)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".bin")):
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def logprobs_rows(split: str, problems: Sequence, programs: Sequence[Sequence[str]],
                  logp: Sequence[np.ndarray]) -> list[ProblemLogprobs]:
    """The file's lines of one split (what :func:`exact_evaluation` returns), −inf written as null."""
    return [ProblemLogprobs(split, p.id, list(progs), [float(v) if math.isfinite(v) else None for v in lp])
            for p, progs, lp in zip(problems, programs, logp)]


def write_logprobs(out_dir: str | Path, header: LogprobsHeader, rows: Sequence[ProblemLogprobs]) -> Path:
    """``<out_dir>/exact_logprobs.jsonl`` (the header line, then one line per problem), atomically, and its
    sha256 in ``<out_dir>/manifest.json`` (spolab.jsonl.write_manifest), so an edited copy is refused."""
    path = Path(out_dir) / LOGPROBS_FILE
    write_jsonl(path, [dataclasses.asdict(header), *(dataclasses.asdict(r) for r in rows)])
    write_manifest(out_dir, [LOGPROBS_FILE])
    return path


class RefLogprobs:
    """π_ref's log-probs of every enumerated program, read from the ``exact_logprobs.jsonl`` an evaluation
    of π_ref wrote (the workflow's SFT evaluation), instead of enumerating and running π_ref again.

    :meth:`read` refuses, each with one line, a file edited since it was written (its manifest), one that
    is not such a file, and one computed otherwise than this evaluation would compute it: another
    enumeration size, ``max_new_tokens``, precision or device, other weights than ``ref_model_dir``'s,
    or another version of a split. Read this way, the metrics are the same bits as computing them
    fresh: same programs in the same order, same forward passes (sequence_logprobs is deterministic; on
    the CPU at the same thread count, as the workflow's one-thread eval jobs run)."""

    def __init__(self, path: Path, header: LogprobsHeader, rows: dict[tuple[str, str], ProblemLogprobs]):
        self.path, self.header, self.rows = path, header, rows

    @classmethod
    def read(cls, path: str | Path, *, ref_model_dir: str | Path, max_len: int, max_new_tokens: int,
             precision: str, device: str, data_dir: str | Path, splits: Sequence[str]) -> RefLogprobs:
        path = Path(path)
        key = f"exact_mass.ref_logprobs={str(path)!r}"
        rebuild = (f"rebuild it (`snakemake --forcerun {path}`, the SFT evaluation), or set "
                   "exact_mass.ref_logprobs=null to enumerate and run π_ref here")
        check_manifest(path, rebuild)
        lines = read_jsonl(path, _LineParser(), rebuild=rebuild)
        if not lines:
            raise BadFile(f"{path}: empty, expected a {LOGPROBS_FORMAT} header line; {rebuild}")
        header, rows = lines[0], lines[1:]
        for split in splits:
            info = header.splits.get(split)
            if info is None:
                raise ConfigError(f"{key}: holds no {split} split (it has {sorted(header.splits)}); {rebuild}")
            if not isinstance(info, dict) or info.get("data_sha256") != sha256_file(Path(data_dir) / f"{split}.jsonl"):
                raise ConfigError(f"{key}: its {split} split is not {Path(data_dir) / f'{split}.jsonl'} (another "
                                  f"sha256: another dataset or version); {rebuild}")
        want = {"max_len (the enumeration's size: exact_mass.max_len)": (header.max_len, max_len),
                "task.max_new_tokens": (header.max_new_tokens, max_new_tokens),
                "precision": (header.precision, precision), "device type": (header.device, device)}
        for what, (got, here) in want.items():
            if got != here:
                raise ConfigError(f"{key}: its log-probs were computed with {what} {got!r}, this evaluation uses "
                                  f"{here!r}; {rebuild}")
        if header.model_sha256 != weights_sha256(ref_model_dir):
            raise ConfigError(f"{key}: its log-probs are those of the model at {header.model_dir}, whose weights differ "
                              f"from ref_model_dir={str(ref_model_dir)!r}'s; {rebuild}")
        return cls(path, header, {(r.split, r.problem_id): r for r in rows})

    def select(self, split: str, problems: Sequence) -> tuple[list[list[str]], list[np.ndarray]]:
        """(programs, π_ref's log-probs) of each of ``problems`` of ``split``, in their order."""
        missing = [p.id for p in problems if (split, p.id) not in self.rows]
        if missing:
            raise ConfigError(f"exact_mass.ref_logprobs={str(self.path)!r}: holds no programs for {len(missing)} "
                              f"{split} problem(s) this evaluation scores ({missing[0]}, ...): evaluate π_ref on the same "
                              "problems (n_problems), or set exact_mass.ref_logprobs=null")
        rows = [self.rows[(split, p.id)] for p in problems]
        return [list(r.programs) for r in rows], [r.logp_array() for r in rows]


class _LineParser:
    """read_jsonl's parser of exact_logprobs.jsonl: the header first, then one ProblemLogprobs per line."""

    def __init__(self):
        self.seen_header = False

    def __call__(self, d):
        if not self.seen_header:
            self.seen_header = True
            return record(LogprobsHeader, d)
        return record(ProblemLogprobs, d)
