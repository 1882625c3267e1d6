"""RL's sampling temperature T (docs/method.md, "Sampling temperature"), against brute force.

The design under test: PPO, GRPO and RLOO train the tempered policy π_θ,T = softmax(logits/T), so every
log-prob of their losses (π_θ, π_old = the sampler's, π_ref) is at T; SPO trains π_θ at T 1 and uses the
sampler's tempered log-prob only as the behaviour policy μ. The references are computed here, independently
of spolab's sampler and scorer: a tiny Llama over a 4-token vocabulary, responses of at most 3 tokens (40 in
all), each token's probability a softmax of that prefix's logits written out as a Python loop, each prefix
run alone (no padding, no KV cache, no ``process_logits``).
"""

import itertools
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import rl_cfg
from spolab import rl
from spolab.algos import ConfigError, get_algorithm
from spolab.algos.base import policy_logp
from spolab.config import load_config
from spolab.rollout.collect import attach_ref_logp
from spolab.rollout.sampler import sample, score
from spolab.rollout.trajectories import Trajectory, collate, load_trajectories
from spolab.train import train_step
from spolab.validate import validate

PAD, BOS, EOS, A = 0, 1, 2, 3  # the 4-token vocabulary (A: an ordinary token)
V, MAX_NEW = 4, 3
PROMPTS = [[BOS, A], [BOS, 1, A, A]]  # two lengths: the shorter is left-padded in a batch
T = 0.4  # the temperature at which SmolLM2 solves HumanEval problems


def tiny_lm(seed: int) -> LlamaForCausalLM:
    """A 1-layer Llama over the 4 tokens, logits of order 1 (EOS damped so that responses are not all
    empty): distinct, far-from-uniform distributions, so temperature matters."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=16, bos_token_id=BOS, eos_token_id=EOS,
                      pad_token_id=PAD, initializer_range=0.3, tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight[EOS] *= 0.3
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(policy, frozen reference, the policy's folder): PPO's critic loads its body from the folder."""
    path = tmp_path_factory.mktemp("tiny_lm")
    policy = tiny_lm(3)
    policy.save_pretrained(path)
    ref = tiny_lm(1).requires_grad_(False)
    return policy, ref, str(path)


def all_responses() -> list[list[int]]:
    """Every response of at most MAX_NEW tokens: EOS only last; unfinished ones have MAX_NEW tokens."""
    out = []
    for n in range(1, MAX_NEW + 1):
        for r in itertools.product(range(V), repeat=n):
            if EOS not in r[:-1] and (r[-1] == EOS or n == MAX_NEW):
                out.append(list(r))
    return out


@torch.no_grad()
def brute_token_logps(model, prompt: list[int], response: list[int], temperature: float) -> list[float]:
    """log softmax(logits/T) of each response token, one prefix at a time, the softmax written out."""
    out = []
    for t in range(len(response)):
        logits = model(input_ids=torch.tensor([prompt + response[:t]])).logits[0, -1].double().tolist()
        z = [v / temperature for v in logits]
        m = max(z)
        log_norm = m + math.log(sum(math.exp(v - m) for v in z))
        out.append(z[response[t]] - log_norm)
    return out


def brute_seq_logp_grad(model, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    """(len,) log π_T of each response token, differentiable: one unpadded forward, z/T − logsumexp(z/T)."""
    logits = model(input_ids=torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1].double()
    z = logits / temperature
    return z.gather(-1, torch.tensor(response)[:, None]).squeeze(-1) - torch.logsumexp(z, dim=-1)


def sample_rows(model, prompt: list[int], n: int, temperature: float, seed: int):
    ids, mask = torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long)
    ro = sample(model, ids, mask, max_new_tokens=MAX_NEW, eos_id=EOS, pad_id=PAD, temperature=temperature,
                generator=torch.Generator().manual_seed(seed), num_samples=n)
    rows = []
    for r, m, lp in zip(ro.response_ids.tolist(), ro.response_mask.tolist(), ro.logprobs.tolist()):
        k = sum(m)
        rows.append((r[:k], lp[:k]))
    return rows


def _batch_of(pairs: list[tuple[list[int], list[int]]], ref):
    """One padded batch of (prompt, response) pairs as train_step builds it: π_ref's log-probs cached on the
    records (at T 1, attach_ref_logp), then collated."""
    trajs = [Trajectory("p", p, r, 0.0, False, "online") for p, r in pairs]
    attach_ref_logp(ref, trajs, PAD)
    return collate(trajs, PAD)


def _algo(name, models, temperature, **over):
    policy, ref, path = models
    cfg = load_config("rl", [f"algo={name}", "group_size=4"]).algo
    for k, v in {"lr": 0.0, "warmup_steps": 0, **over}.items():
        cfg[k] = v
    return get_algorithm(name)(cfg, policy, ref, None, q0={"p0": 0.3, "p1": -0.2}, seed=0, init_path=path,
                               temperature=temperature)


def fresh_batch(models, temperature: float, seed: int = 0):
    """What train_step hands an algorithm: 2 prompts × 4 samples of the policy at T with the sampler's
    log-probs, rewards with signal in each group, π_ref log-probs cached at T 1 (attach_ref_logp)."""
    policy, ref, _ = models
    ids = torch.tensor([[PAD, PAD] + PROMPTS[0], PROMPTS[1]])
    mask = (torch.arange(4) >= torch.tensor([[2], [0]])).long()
    ro = sample(policy, ids, mask, max_new_tokens=MAX_NEW, eos_id=EOS, pad_id=PAD, temperature=temperature,
                generator=torch.Generator().manual_seed(seed), num_samples=4)
    trajs = []
    for i in range(8):
        k = int(ro.response_mask[i].sum())
        trajs.append(Trajectory(f"p{i // 4}", PROMPTS[i // 4], ro.response_ids[i, :k].tolist(), float(i % 2),
                                bool(i % 2), "online", 0, behaviour_logp=ro.logprobs[i, :k].tolist()))
    attach_ref_logp(ref, trajs, PAD)
    return trajs


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


# ---------------------------------------------------------------------------- (a) log-probs = brute force


@pytest.mark.parametrize("temperature", [T, 1.0, 2.5])
def test_training_logprobs_equal_brute_force_for_every_response(models, temperature):
    """policy_logp (what every loss reads) and Algorithm.logp / ref_logp, on all 40 responses of each
    prompt (one padded batch), equal the brute-force log-probs of softmax(logits/T), token by token;
    their exp sums to 1 over the responses."""
    policy, ref, _ = models
    responses = all_responses()
    assert len(responses) == 40
    pairs = [(p, r) for p in PROMPTS for r in responses]  # prompts of two lengths: left padding
    batch = _batch_of(pairs, ref)

    def brute(model, temp):
        out = torch.zeros(batch.response_ids.shape, dtype=torch.float64)
        for i, (p, r) in enumerate(pairs):
            out[i, : len(r)] = torch.tensor(brute_token_logps(model, p, r, temp), dtype=torch.float64)
        return out

    at_t, ref_at_t = brute(policy, temperature), brute(ref, temperature)
    for k in range(len(PROMPTS)):  # a distribution over the 40 responses of each prompt
        assert at_t[40 * k : 40 * (k + 1)].sum(-1).exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    with torch.no_grad():
        assert (policy_logp(policy, batch, temperature).double() - at_t).abs().max() < 1e-5
        for name in ("ppo", "grpo", "rloo"):  # trained at T: π_θ,T and π_ref,T
            algo = _algo(name, models, temperature)
            assert (algo.logp(batch).double() - at_t).abs().max() < 1e-5
            assert (algo.ref_logp(batch).double() - ref_at_t).abs().max() < 1e-5
        spo = _algo("spo", models, temperature)  # trains π_θ at T 1, whatever the sampling temperature
        assert (spo.logp(batch).double() - brute(policy, 1.0)).abs().max() < 1e-5


@pytest.mark.parametrize("temperature", [T, 2.5])
def test_sampler_behaviour_logprobs_equal_brute_force(models, temperature):
    """The sampler's per-token log-prob of every response it draws (the trajectories' behaviour_logp) is the
    brute-force log-prob under softmax(logits/T); at T 2.5, 4000 draws per prompt reach all 40 responses."""
    policy, _, _ = models
    for prompt in PROMPTS:
        seen = {}
        for r, lp in sample_rows(policy, prompt, 4000, temperature, seed=1):
            seen.setdefault(tuple(r), lp)
        for r, lp in seen.items():
            brute = brute_token_logps(policy, prompt, list(r), temperature)
            assert lp == pytest.approx(brute, abs=1e-5), r
        assert len(seen) >= (40 if temperature > 1 else 10)


# ---------------------------------------------------------------------------- (b) on-policy: ratio 1, gradients


@pytest.mark.parametrize("name", ["ppo", "grpo"])
def test_ratio_is_one_on_fresh_samples_at_temperature(name, models):
    """On data just sampled at T, π_θ,T/π_old = 1 per token before any update; the untempered π_θ (the
    bug the design rules out) is far from it. Inside the update (lr 0, 2 epochs × 2 minibatches) no
    token is clipped and the k3 KL(π_old‖π_θ) is 0."""
    policy, _, _ = models
    batch = collate(fresh_batch(models, T), PAD)
    algo = _algo(name, models, T, epochs=2, minibatches=2, **({"critic_lr": 0.0} if name == "ppo" else {}))
    mask = batch.response_mask.bool()
    with torch.no_grad():
        ratio = (algo.logp(batch) - batch.behaviour_logp).exp()[mask]
        untempered = (policy_logp(policy, batch) - batch.behaviour_logp).exp()[mask]
    assert (ratio - 1).abs().max() < 1e-5
    assert (untempered - 1).abs().max() > 0.2
    m = algo.update(batch)
    assert m["policy/clipfrac"] == 0.0 and abs(m["policy/approx_kl_old"]) < 1e-9


def _brute_objective(name, models, trajs, cfg, temperature, ref_temperature):
    """The loss whose gradient the algorithm's first optimiser step applies, written from the method's
    equations with brute-force log-probs: π_θ at ``temperature``, π_ref at ``ref_temperature`` (equal, as
    designed; the test also builds the mixed one to show it differs). ρ = 1 at this first step."""
    policy, ref, _ = models
    lp = [brute_seq_logp_grad(policy, t.prompt_ids, t.response_ids, temperature) for t in trajs]
    old = [x.detach() for x in lp]  # π_old: the sampler's log-probs (= brute force at T, test (a))
    with torch.no_grad():
        lref = [brute_seq_logp_grad(ref, t.prompt_ids, t.response_ids, ref_temperature) for t in trajs]
    r = [t.reward for t in trajs]
    beta, n_tok = cfg.beta, sum(len(x) for x in lp)
    if name == "rloo":  # −A_i Σ_t log π_θ,T per sequence, mean over sequences; r̃ = r − β Σ_t (log π_old − log π_ref)
        rt = [r[i] - beta * float((old[i] - lref[i]).sum()) for i in range(len(trajs))]
        loss = 0.0
        for i in range(len(trajs)):
            g = range(4 * (i // 4), 4 * (i // 4) + 4)
            adv = rt[i] - sum(rt[j] for j in g if j != i) / 3
            loss = loss - adv * lp[i].sum()
        return loss / len(trajs)
    if name == "grpo":  # token-mean of −A ρ + β k3, A = group-normalised reward
        loss = 0.0
        for i in range(len(trajs)):
            g = [r[j] for j in range(4 * (i // 4), 4 * (i // 4) + 4)]
            mean = sum(g) / 4
            adv = (r[i] - mean) / (math.sqrt(sum((x - mean) ** 2 for x in g) / 3) + 1e-6)
            d = lref[i] - lp[i]
            loss = loss + (-adv * (lp[i] - old[i]).exp() + beta * (d.exp() - d - 1)).sum()
        return loss / n_tok
    # ppo: the critic's head starts at 0, so V = 0 and GAE (γ 1, λ 0.95) sums the KL-shaped rewards
    gamma, lam = cfg.gamma, cfg.gae_lambda
    advs = []
    for i in range(len(trajs)):
        rew = [-beta * float(old[i][t] - lref[i][t]) for t in range(len(lp[i]))]
        rew[-1] += r[i]
        a, run = [0.0] * len(rew), 0.0
        for t in reversed(range(len(rew))):
            run = rew[t] + gamma * lam * run
            a[t] = run
        advs.append(a)
    flat = [x for a in advs for x in a]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / len(flat) + 1e-8)
    loss = 0.0
    for i in range(len(trajs)):
        w = torch.tensor([(x - mean) / std for x in advs[i]], dtype=torch.float64)
        loss = loss - (w * (lp[i] - old[i]).exp()).sum()
    return loss / n_tok


@pytest.mark.parametrize("name", ["ppo", "grpo", "rloo"])
def test_on_policy_gradient_equals_brute_force_tempered_objective(name, models):
    """The first policy gradient of PPO, GRPO and RLOO at T 0.4 (β 0.5, π_θ ≠ π_ref so the KL term acts) is
    the gradient of the brute-force objective in which π_θ, π_old and π_ref are all at T; the objective
    with π_ref at T 1 (tempered and untempered log-probs mixed) has a clearly different gradient."""
    policy, _, _ = models
    trajs = fresh_batch(models, T, seed=2)
    algo = _algo(name, models, T, beta=0.5, minibatches=1)
    got = algo.first_gradient(collate(trajs, PAD))
    grads = {}
    for ref_t in (T, 1.0):
        policy.zero_grad(set_to_none=True)
        _brute_objective(name, models, trajs, algo.cfg, T, ref_t).backward()
        grads[ref_t] = torch.cat([p.grad.flatten() for p in policy.parameters()])
    policy.zero_grad(set_to_none=True)
    assert got.norm() > 1e-3
    assert _rel(got, grads[T]) < 1e-4
    assert _rel(got, grads[1.0]) > 1e-2
    assert all(t.ref_logp == pytest.approx(brute_token_logps(models[1], t.prompt_ids, t.response_ids, 1.0), abs=1e-5)
               for t in trajs)  # the records keep π_ref at T 1 (what SPO reads from a dump): nothing cached at T


# ---------------------------------------------------------------------------- (c) SPO: μ is the tempered sampler


def test_spo_truncated_weights_use_the_tempered_behaviour_logprob(models):
    """SPO at T 0.4 with truncated weights: w = min(c, π_θ(a|x)/μ(a|x)), π_θ at T 1 (the policy SPO trains)
    and μ the tempered distribution the sampler drew from, both by brute force; the update's mean weight and
    its first gradient (of mean_B w (Q̂0 + β Σ_t log π_θ/π_ref − r)², π_ref at T 1) match them."""
    policy, ref, _ = models
    trajs = fresh_batch(models, T, seed=3)
    batch = collate(trajs, PAD)
    clip = 1.5
    algo = _algo("spo", models, T, is_weights="truncated", is_clip=clip, beta=0.5)
    lp1 = [brute_seq_logp_grad(policy, t.prompt_ids, t.response_ids, 1.0) for t in trajs]
    mu = [sum(brute_token_logps(policy, t.prompt_ids, t.response_ids, T)) for t in trajs]
    ratios = [math.exp(float(x.detach().sum()) - m) for x, m in zip(lp1, mu)]
    w = [min(clip, q) for q in ratios]
    assert min(ratios) < 1 < clip < max(ratios)  # the draw has weights below 1 and truncated ones
    assert [sum(t.behaviour_logp) for t in trajs] == pytest.approx(mu, abs=1e-5)
    # the objective, by hand
    q0 = {"p0": 0.3, "p1": -0.2}
    loss = 0.0
    for t, x, wi in zip(trajs, lp1, w):
        lref = sum(brute_token_logps(ref, t.prompt_ids, t.response_ids, 1.0))
        loss = loss + wi * (q0[t.problem_id] + 0.5 * (x.sum() - lref) - t.reward) ** 2
    policy.zero_grad(set_to_none=True)
    (loss / len(trajs)).backward()
    brute_grad = torch.cat([p.grad.flatten() for p in policy.parameters()])
    policy.zero_grad(set_to_none=True)
    assert _rel(algo.first_gradient(batch), brute_grad) < 1e-4
    m = algo.update(batch)
    assert m["spo/is_weight"] == pytest.approx(sum(w) / len(w), rel=1e-5)
    assert m["spo/is_weight"] != pytest.approx(1.0, abs=1e-2)  # μ at T 1 would make every weight π_θ/π_θ = 1


# ---------------------------------------------------------------------------- (d) validation and plumbing


@pytest.mark.parametrize("name", ["ppo", "grpo", "rloo", "spo"])
def test_validation_accepts_any_positive_temperature(name):
    for t in (0.4, 1.0, 1.5):
        validate(load_config("rl", ["scale=smoke", f"algo={name}", f"temperature={t}"]), "rl", check_paths=False)
    for t in (0, -0.5):
        cfg = load_config("rl", ["scale=smoke", f"algo={name}", f"temperature={t}"])
        with pytest.raises(ConfigError, match=rf"temperature={t}: must be > 0 \(the sampling temperature T"):
            validate(cfg, "rl", check_paths=False)


def test_each_algorithm_trains_at_its_temperature(models):
    """On-policy algorithms train at the sampling temperature, SPO at 1; train_step refuses to feed an
    on-policy algorithm samples of another temperature (its π_old would be another policy's)."""
    for name, trained in (("ppo", T), ("grpo", T), ("rloo", T), ("spo", 1.0)):
        algo = _algo(name, models, T)
        assert (algo.sampling_temperature, algo.temperature) == (T, trained)
    grpo = _algo("grpo", models, T)
    kw = dict(group_size=4, max_new_tokens=MAX_NEW, generator=None, version=0, reward_kind="binary")
    with pytest.raises(ValueError, match="trains the policy at temperature 0.4 but would be fed samples drawn at "
                                         "temperature 1.0"):
        train_step(grpo, models[0], [], None, None, {"fresh": 0}, temperature=1.0, **kw)
    with pytest.raises(ConfigError, match="temperature=0"):
        _algo("ppo", models, 0.0)


# ---------------------------------------------------------------------------- (e) sampled frequencies


def test_sampled_frequencies_match_the_tempered_distribution(models):
    """20 000 draws per prompt at T 0.4 (fixed seed): each response's count lies within 4.5 binomial SDs
    of n·p_T, p_T by brute force (4.5 SDs: a family of 80 intervals stays wide); the T-1 probabilities
    fall outside those bounds for some response."""
    policy, _, _ = models
    n = 20000
    for prompt in PROMPTS:
        counts = {}
        for r, _ in sample_rows(policy, prompt, n, T, seed=4):
            counts[tuple(r)] = counts.get(tuple(r), 0) + 1
        assert set(counts) <= {tuple(r) for r in all_responses()}
        off_at_one = 0
        for r in all_responses():
            p = math.exp(sum(brute_token_logps(policy, prompt, r, T)))
            sd = math.sqrt(n * p * (1 - p))
            c = counts.get(tuple(r), 0)
            assert abs(c - n * p) <= 4.5 * sd + 1e-9, (r, c, n * p)
            p1 = math.exp(sum(brute_token_logps(policy, prompt, r, 1.0)))
            off_at_one += abs(c - n * p1) > 4.5 * math.sqrt(n * p1 * (1 - p1))
        assert off_at_one > 0


# ---------------------------------------------------------------------------- the RL entry point at T ≠ 1


def test_rl_run_at_temperature_is_on_policy_and_keeps_untempered_records(smoke_q0, tmp_path):
    """GRPO at T 0.4 through python -m spolab.rl's code (real tokenizer, padded prompts, KV-cached sampler):
    its single step sees ratios of exactly 1 (no clipped token, k3 KL(π_old‖π_θ) 0), and the dumped
    trajectories (the earlier_run source) carry π_ref log-probs at T 1, as every stored record does."""
    from spolab.models.build import load_model, load_tokenizer
    from spolab.tracking import read_metrics

    root = smoke_q0.parent
    rl.run(rl_cfg(root, tmp_path, "algo=grpo", "temperature=0.4", "updates=2", "eval_every=2", "ckpt_every=2"))
    rows = [r for r in read_metrics(tmp_path / "rl") if "policy/clipfrac" in r]
    assert len(rows) == 2
    assert all(r["policy/clipfrac"] == 0.0 and abs(r["policy/approx_kl_old"]) < 1e-8 for r in rows)
    trajs = load_trajectories(tmp_path / "rl" / "trajectories.jsonl")[:16]
    batch = collate(trajs, load_tokenizer(root / "sft" / "model").pad_token_id)
    ref = load_model(root / "sft" / "model")
    with torch.no_grad():
        at_one = score(ref, batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask.long())
        at_t = score(ref, batch.prompt_ids, batch.prompt_mask, batch.response_ids, batch.response_mask.long(),
                     temperature=0.4)
    mask = batch.response_mask.bool()
    assert (batch.ref_logp - at_one)[mask].abs().max() < 1e-5
    assert (batch.ref_logp - at_t)[mask].abs().max() > 1e-2
