"""The exact-optimum testbed (docs/design.md §3): an enumerable sequence task where π*, V*, pass@k
and entropy are computed exactly, so convergence is measured, not argued.

Actions are K tokens plus EOS; a response is a prefix of at most L tokens followed by EOS
(EOS is forced at length L). Every response is therefore "one state + EOS": responses and
states are in one-to-one correspondence, S = 1 + K + … + K^L of them. Each response has a
reward (binary by default). π_ref is a random softmax policy per state.

Closed forms (docs/design.md §2), computed by backward induction over the tree:
    Q*(s, EOS) = r(s),  Q*(s, a) = V*(s·a),  V*(s) = β log Σ_a π_ref(a|s) exp(Q*(s, a)/β),
    π*(a|s) = π_ref(a|s) exp((Q*(s, a) − V*(s))/β).
A tabular policy is a (S, A) table of log-probs; sequence-level quantities come from the
(S, T) "path" arrays below, the same (B, T) layout the losses take.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch


@dataclass
class Testbed:
    K: int  # tokens besides EOS
    L: int  # max tokens before the forced EOS
    states: list[tuple[int, ...]]  # every prefix, shortest first; index = response id
    allowed: torch.Tensor  # (S, A) bool: actions allowed in each state (EOS only at length L)
    ref_logp: torch.Tensor  # (S, A) log π_ref(a|s), -inf where not allowed
    reward: torch.Tensor  # (S,) reward of response "state + EOS"
    path_states: torch.Tensor  # (S, T) state index of each step of response s (T = L + 1)
    path_actions: torch.Tensor  # (S, T) action taken at that step
    path_mask: torch.Tensor  # (S, T) 1 on real steps

    @property
    def eos(self) -> int:
        return self.K

    @property
    def A(self) -> int:
        return self.K + 1


def make_testbed(K: int = 3, L: int = 3, p_success: float = 0.3, ref_temperature: float = 1.0,
                 binary: bool = True, seed: int = 0) -> Testbed:
    g = torch.Generator().manual_seed(seed)
    states = [s for n in range(L + 1) for s in itertools.product(range(K), repeat=n)]
    index = {s: i for i, s in enumerate(states)}
    S, A, T = len(states), K + 1, L + 1
    allowed = torch.ones(S, A, dtype=torch.bool)
    for i, s in enumerate(states):
        if len(s) == L:
            allowed[i, :K] = False  # forced EOS
    logits = torch.randn(S, A, generator=g, dtype=torch.float64) * ref_temperature
    ref_logp = torch.log_softmax(logits.masked_fill(~allowed, -math.inf), dim=-1)
    u = torch.rand(S, generator=g, dtype=torch.float64)
    reward = (u < p_success).double() if binary else u
    path_states = torch.zeros(S, T, dtype=torch.long)
    path_actions = torch.zeros(S, T, dtype=torch.long)
    path_mask = torch.zeros(S, T, dtype=torch.float64)
    for i, s in enumerate(states):
        for t in range(len(s) + 1):
            path_states[i, t] = index[s[:t]]
            path_actions[i, t] = s[t] if t < len(s) else K
            path_mask[i, t] = 1.0
    return Testbed(K, L, states, allowed, ref_logp, reward, path_states, path_actions, path_mask)


def token_logp(tb: Testbed, logp_table: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """(B,) response ids → (B, T) per-token log-probs under a (S, A) log-prob table (0 on padding)."""
    lp = logp_table[tb.path_states[seq], tb.path_actions[seq]]  # (B, T)
    m = tb.path_mask[seq]
    return torch.where(m > 0, lp, torch.zeros_like(lp))


def seq_logp(tb: Testbed, logp_table: torch.Tensor) -> torch.Tensor:
    """(S,) log-probability of every response under a (S, A) log-prob table."""
    return token_logp(tb, logp_table, torch.arange(len(tb.states))).sum(-1)


def _backup(tb: Testbed, aggregate) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward induction over the response tree, longest prefixes first.

    Action values: the response's reward for EOS, the child's value for a token. A state's value
    is ``aggregate(i, action_values_row)``. Returns (values (S,), action values (S, A)).
    """
    S, A = tb.ref_logp.shape
    index = {s: i for i, s in enumerate(tb.states)}
    V = torch.zeros(S, dtype=torch.float64)
    Q = torch.full((S, A), -math.inf, dtype=torch.float64)
    for i in reversed(range(S)):
        s = tb.states[i]
        Q[i, tb.eos] = tb.reward[i]
        if len(s) < tb.L:
            for a in range(tb.K):
                Q[i, a] = V[index[(*s, a)]]
        V[i] = aggregate(i, Q[i])
    return V, Q


def soft_optimum(tb: Testbed, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact V* (S,) and log π* (S, A): V*(s) = β log Σ_a π_ref(a|s) exp(Q*(s, a)/β)."""
    V, Q = _backup(tb, lambda i, q: beta * torch.logsumexp(tb.ref_logp[i] + q / beta, dim=-1))
    log_pi = torch.where(tb.allowed, tb.ref_logp + (Q - V[:, None]) / beta, torch.full_like(Q, -math.inf))
    return V, log_pi


def conditioned_on_success(tb: Testbed) -> torch.Tensor:
    """log π_ref(a|s, success) (S, A): the optimum of SPO's ``bce`` loss (binary rewards).

    π(a|s, success) = π_ref(a|s) P(success|s·a) / P(success|s), with P(success|s) from the same
    backward induction (value = Σ_a π_ref(a|s) P(success|s·a)).
    """
    P, Pa = _backup(tb, lambda i, p: (tb.ref_logp[i].exp() * p.clamp(min=0)).sum())
    Pa = Pa.clamp(min=0)  # disallowed actions carry -inf action values: probability 0
    return torch.where(Pa > 0, tb.ref_logp + Pa.log() - P[:, None].log(), torch.full_like(Pa, -math.inf))


def kl(tb: Testbed, logp_p: torch.Tensor, logp_q: torch.Tensor) -> float:
    """KL(p‖q) in nats over whole responses, from (S, A) log-prob tables."""
    lp, lq = seq_logp(tb, logp_p), seq_logp(tb, logp_q)
    w = lp.exp()
    diff = torch.where(w > 0, lp - lq, torch.zeros_like(lp))
    return float((w * diff).sum())


def entropy(tb: Testbed, logp_table: torch.Tensor) -> float:
    """Entropy (nats) of the response distribution."""
    lp = seq_logp(tb, logp_table)
    w = lp.exp()
    return float(-(w * torch.where(w > 0, lp, torch.zeros_like(lp))).sum())


def success_prob(tb: Testbed, logp_table: torch.Tensor) -> float:
    return float((seq_logp(tb, logp_table).exp() * tb.reward).sum())


def pass_at_k(tb: Testbed, logp_table: torch.Tensor, k: int) -> float:
    """Exact pass@k = 1 − (1 − P(success))^k for binary rewards."""
    return 1.0 - (1.0 - success_prob(tb, logp_table)) ** k


def sample(tb: Testbed, logp_table: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) response ids drawn from the policy (exactly, from its response distribution)."""
    probs = seq_logp(tb, logp_table).exp()
    return torch.multinomial(probs / probs.sum(), n, replacement=True, generator=generator)
