"""Exact success mass (spolab.eval.exact_mass): teacher-forced sequence log-probs against a brute-force
loop, total mass 1 over every outcome of a tiny vocabulary, the per-problem metrics on constructed
log-probs, a Monte-Carlo check against the codebase's own sampler, and the keys evaluate writes."""

from __future__ import annotations

import itertools
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import smoke_cfg
from spolab.eval.exact_mass import problem_metrics, program_logprobs, sequence_logprobs
from spolab.models.build import build_model, build_tokenizer, load_tokenizer
from spolab.rollout.sampler import decode_responses, encode_prompts, sample, score_groups

WORDS = ["sort", "sum", "|"]  # a tiny vocabulary: 4 specials + 3 words
TINY = OmegaConf.create({"hidden_size": 16, "intermediate_size": 32, "num_layers": 2, "num_heads": 2,
                         "max_positions": 32})


@pytest.fixture(scope="module")
def tiny():
    """A random 2-layer model over 7 tokens, its weights scaled up so its distributions are far from uniform."""
    tok = build_tokenizer(WORDS)
    model = build_model(TINY, tok, seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)
    return tok, model.eval()


def brute_force_prob(model, prompt_ids: list[int], response: list[int]) -> float:
    """Π_t softmax(model(prompt + response[:t]))[response[t]]: one full forward per step, no cache, no batching."""
    prob = 1.0
    for t in range(len(response)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + response[:t]])).logits[0, -1].double()
        prob *= float(torch.softmax(logits, -1)[response[t]])
    return prob


def test_sequence_logprobs_equal_a_brute_force_product(tiny):
    """(a) Prompts of different lengths (left padding), responses of different lengths, uneven counts per
    prompt, and forwards and rows small enough to split a prompt's prefix tree across rows and passes."""
    tok, model = tiny
    prompts = ["sort", "sum | sort sum", "|"]
    eos, ids = tok.eos_token_id, [tok(p)["input_ids"] for p in prompts]
    responses = [[[4, eos], [5, 6, 4, eos], [eos], [6, 6, 6]], [[5, eos]], [[4, 6, 5, eos], [0, 3, eos]]]
    p_ids, p_mask = encode_prompts(tok, prompts)
    for positions, nodes in ((1, 1), (12, 2), (2048, 256)):
        lp = sequence_logprobs(model, p_ids, p_mask, responses, pad_id=tok.pad_token_id, max_positions=positions,
                               max_nodes=nodes)
        assert [len(x) for x in lp] == [4, 1, 2]
        for u, rs in enumerate(responses):
            for i, r in enumerate(rs):
                assert math.exp(lp[u][i]) == pytest.approx(brute_force_prob(model, ids[u], r), rel=1e-5)


def one_row_per_sequence(model, p_ids, p_mask, responses, pad_id) -> list[np.ndarray]:
    """The previous forward of the exact mass: every sequence its own padded row after its prompt's KV
    cache (score_groups with a count per prompt), the token log-probs summed in float64."""
    out = []
    for u, rs in enumerate(responses):
        if not rs:
            out.append(np.zeros(0))
            continue
        ids = torch.full((len(rs), max(map(len, rs))), pad_id)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rs):
            ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
        lp = score_groups(model, p_ids[u : u + 1], p_mask[u : u + 1], ids, mask, [len(rs)])
        out.append(lp.double().sum(-1).numpy())
    return out


def test_the_prefix_tree_forward_equals_one_row_per_sequence(tiny, smoke_data):
    """The tree-attention forward (sequence_logprobs) against the previous one-row-per-sequence forward, to
    1e-6 on log-probs: on the tiny model (sdpa and eager attention, left-padded prompts, duplicates, a
    one-token sequence, an unfinished one, a prompt with none) and on a random xs model over the smoke
    test split's enumerated programs (shared prefixes, one tree cut into rows). Same inputs, same bits."""
    from spolab.config import load_config
    from spolab.tasks.base import get_task
    from spolab.tasks.io import load_split

    tok, model = tiny
    eos = tok.eos_token_id
    prompts = ["sort", "sum | sort sum", "|", "sum"]
    responses = [[[4, 5, eos], [4, 5, 6, eos], [4, eos], [4, 5, eos], [eos], [6, 6, 6]], [[5, eos]], [],
                 [[4, 6, 5, eos], [4, 6, 4, eos], [0, 3, eos]]]
    p_ids, p_mask = encode_prompts(tok, prompts)
    want = one_row_per_sequence(model, p_ids, p_mask, responses, tok.pad_token_id)
    eager = build_model(TINY, tok, seed=0).eval()
    eager.load_state_dict(model.state_dict())
    eager.config._attn_implementation = "eager"
    for m in (model, eager):
        for positions, nodes in ((2048, 256), (10, 2)):
            got = sequence_logprobs(m, p_ids, p_mask, responses, pad_id=tok.pad_token_id, max_positions=positions,
                                    max_nodes=nodes)
            assert [len(g) for g in got] == [6, 1, 0, 3]
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    assert got[0][0] == got[0][3]  # a duplicate scores the same

    cfg = load_config("evaluate", ["scale=smoke"])
    task = get_task(cfg.task)
    problems = load_split(smoke_data, "test")[:12]
    stok = load_tokenizer(smoke_data / "tokenizer")
    xs = build_model(cfg.model, stok, seed=3).eval()
    programs = [task.enumerate_solutions(p) for p in problems]
    ids = [[r + [stok.eos_token_id] for r in stok(progs, add_special_tokens=False)["input_ids"]] for progs in programs]
    s_ids, s_mask = encode_prompts(stok, [task.prompt(p) for p in problems])
    want = one_row_per_sequence(xs, s_ids, s_mask, ids, stok.pad_token_id)
    got = sequence_logprobs(xs, s_ids, s_mask, ids, pad_id=stok.pad_token_id, max_positions=512, max_nodes=16)
    assert sum(map(len, programs)) > 50
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
    again = sequence_logprobs(xs, s_ids, s_mask, ids, pad_id=stok.pad_token_id, max_positions=512, max_nodes=16)
    assert all(np.array_equal(a, g) for a, g in zip(again, got))


def test_all_outcomes_sum_to_one(tiny):
    """(b) With max_new_tokens T, the sampler's outcomes are every sequence of < T non-EOS tokens followed by
    EOS, and every T non-EOS tokens (unfinished): their masses sum to 1, so EOS is scored exactly once."""
    tok, model = tiny
    T, eos = 3, tok.eos_token_id
    others = [i for i in range(len(tok)) if i != eos]  # pad, bos and unk can be sampled too
    finished = [[*s, eos] for n in range(T) for s in itertools.product(others, repeat=n)]
    unfinished = [list(s) for s in itertools.product(others, repeat=T)]
    p_ids, p_mask = encode_prompts(tok, ["sum sort", "|"])
    lp = sequence_logprobs(model, p_ids, p_mask, [finished + unfinished] * 2, pad_id=tok.pad_token_id,
                           max_positions=64, max_nodes=16)
    for x in lp:
        assert np.exp(x).sum() == pytest.approx(1.0, abs=1e-5)
        assert np.exp(x[: len(finished)]).sum() < 1 - 1e-3  # the unfinished ones carry real mass


def test_program_logprobs_encode_like_the_sampler(tiny):
    """Texts: EOS appended, a program longer than max_new_tokens has mass 0 (−inf), an unknown word raises."""
    tok, model = tiny
    p_ids, p_mask = encode_prompts(tok, ["sort"])
    lp = program_logprobs(model, tok, ["sort"], [["sum", "sort | sum", "sort | sort | sum"], []], max_new_tokens=4)
    direct = sequence_logprobs(model, p_ids, p_mask, [[[5, 2], [4, 6, 5, 2]]], pad_id=tok.pad_token_id)[0]
    assert np.allclose(lp[0][:2], direct) and lp[0][2] == -np.inf and len(lp[1]) == 0
    with pytest.raises(ValueError, match="tokenisation"):
        program_logprobs(model, tok, ["sort"], [["head"]], max_new_tokens=4)


def test_problem_metrics_on_constructed_logprobs():
    """(c) Known success mass, pass@k, entropy and KL among correct programs."""
    m = problem_metrics(np.log([0.1, 0.1, 0.1, 0.1]), np.log([0.3, 0.3, 0.3, 0.3]), ks=(1, 10))
    assert m["success_mass"] == pytest.approx(0.4)
    assert m["pass@1"] == pytest.approx(0.4) and m["pass@10"] == pytest.approx(1 - 0.6**10)
    assert m["entropy_correct"] == pytest.approx(math.log(4))  # q uniform over 4
    assert m["kl_ref_correct"] == pytest.approx(0.0, abs=1e-12)  # same conditional, whatever P_ref is
    assert m["n_programs"] == 4
    q, r = np.array([0.5, 0.25, 0.25]), np.array([0.2, 0.2, 0.6])
    m = problem_metrics(np.log(0.8 * q), np.log(0.01 * r), ks=(5,))
    assert m["success_mass"] == pytest.approx(0.8) and m["pass@5"] == pytest.approx(1 - 0.2**5)
    assert m["entropy_correct"] == pytest.approx(1.5 * math.log(2))
    assert m["kl_ref_correct"] == pytest.approx(float((r * np.log(r / q)).sum()))  # KL(r ‖ q), this direction
    same = np.log([1e-30, 3e-31])  # tiny P: q stays exact in log space
    m = problem_metrics(same, same, ks=(1,))
    assert m["entropy_correct"] == pytest.approx(-(10 / 13 * math.log(10 / 13) + 3 / 13 * math.log(3 / 13)))
    assert m["kl_ref_correct"] == 0.0 and m["pass@1"] == pytest.approx(1.3e-30)
    m = problem_metrics(np.array([math.log(0.5), -np.inf]), np.array([math.log(0.2), -np.inf]), ks=(2,))
    assert m["success_mass"] == 0.5 and m["entropy_correct"] == 0.0 and m["kl_ref_correct"] == 0.0
    empty = problem_metrics(np.zeros(0), np.zeros(0), ks=(1,))  # nothing enumerated
    assert empty["success_mass"] == 0.0 and empty["pass@1"] == 0.0
    assert math.isnan(empty["entropy_correct"]) and math.isnan(empty["kl_ref_correct"])
    assert "kl_ref_correct" not in problem_metrics(np.log([0.5]), None, ks=(1,))
    assert problem_metrics(np.log([0.6, 0.5]), ks=(3,))["pass@3"] == 1.0  # P clipped to 1 (float rounding)


def test_monte_carlo_frequency_matches_the_exact_mass(tiny):
    """(d) The codebase's sampler (temperature 1, top-p 1) draws N responses; the share that decode to a
    program of a set, finished with EOS, matches the set's exact mass within 4.5 binomial standard errors."""
    tok, model = tiny
    N, T = 40_000, 4
    ids, mask = encode_prompts(tok, ["sum | sort"])
    ro = sample(model, ids, mask, max_new_tokens=T, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                generator=torch.Generator().manual_seed(0), num_samples=N)
    texts = decode_responses(tok, ro.response_ids, ro.response_mask)
    words = [w for w in tok.convert_ids_to_tokens(list(range(len(tok)))) if w != tok.eos_token]
    every = [" ".join(s) for n in range(1, T) for s in itertools.product(words, repeat=n)]  # finished, non-empty
    mass = np.exp(program_logprobs(model, tok, ["sum | sort"], [every], max_new_tokens=T)[0])
    ranked = [every[i] for i in np.argsort(-mass)]  # sets chosen by their exact mass, not by the sample
    sets = [ranked[:1], ranked[1:2], ranked[2:10], ranked[10:60], [w for w in ranked if "|" in w], every]
    for programs in sets:
        p = float(np.exp(program_logprobs(model, tok, ["sum | sort"], [programs], max_new_tokens=T)[0]).sum())
        freq = sum(t in programs and bool(f) for t, f in zip(texts, ro.finished)) / N
        se = math.sqrt(p * (1 - p) / N)
        assert p > 1e-3, programs  # a set the test can see
        assert abs(freq - p) <= 4.5 * se, (programs, freq, p)


def test_listdsl_enumeration_keeps_dead_steps():
    """The task's enumeration (what the exact mass sums over) keeps programs with a dead step, each a
    distinct token sequence that passes every test; the solver list of the data step does not."""
    from spolab.tasks import listdsl as dsl
    from spolab.tasks.listdsl_task import ListDSLTask
    from spolab.tasks.problems import Problem

    tests = [[[3, 1, 4], 4], [[5, 9, 2, 6], 9], [[0, 0, 7], 7], [[8, 2, 2], 8]]
    prob = Problem("t", "test", 0, "max", tests[:2], tests[2:])
    task = ListDSLTask(OmegaConf.create({"solver_max_len": 3}))
    full = task.enumerate_solutions(prob)
    plain = [dsl.to_text(p) for p in dsl.enumerate_solvers(prob.all_tests(), 3)]
    assert set(plain) < set(full) and len(set(full)) == len(full)
    assert {"max", "sort | last", "sortdesc | head", "sort | sort | last"} <= set(full)
    assert "sort | sort | last" not in plain
    assert all(dsl.execute(p, prob.all_tests()).success for p in full)
    assert max(len(dsl.parse(p)) for p in task.enumerate_solutions(prob, 2)) == 2


def test_exact_is_skipped_where_it_cannot_run(caplog):
    from spolab.evaluate import _exact_protocol

    cfg = OmegaConf.create({"exact_mass": {"enabled": True, "max_len": None}, "protocols": ["paper", "policy"]})
    listdsl = SimpleNamespace(name="listdsl", enumerates_solutions=True)
    assert _exact_protocol(cfg, listdsl, ["paper", "policy"]) == "policy"  # the pair that samples the policy itself
    assert _exact_protocol(cfg, listdsl, ["paper", "exact"]) == "exact"  # a split without samples: the n-0 pair
    with caplog.at_level("INFO"):
        assert _exact_protocol(cfg, SimpleNamespace(name="humaneval", enumerates_solutions=False), ["policy"]) is None
        assert _exact_protocol(cfg, listdsl, ["paper"]) is None
        assert _exact_protocol(OmegaConf.merge(cfg, {"exact_mass": {"enabled": False}}), listdsl, ["policy"]) is None
    assert "task=humaneval cannot enumerate" in caplog.text and "temperature 1" in caplog.text
    from spolab.tasks.base import task_class

    assert task_class("listdsl").enumerates_solutions and not task_class("humaneval").enumerates_solutions
    assert not task_class("codecontests").enumerates_solutions


def test_exact_mass_config_is_validated():
    from spolab.errors import ConfigError
    from spolab.validate import validate

    for bad, msg in (("exact_mass.max_len=0", "exact_mass.max_len=0: must be null or an integer in [1, 6]"),
                     ("exact_mass.enabled=maybe", "exact_mass.enabled='maybe'")):
        with pytest.raises(ConfigError, match=re.escape(msg)):
            validate(smoke_cfg("evaluate", "/tmp", bad), "evaluate", check_paths=False)
    validate(smoke_cfg("evaluate", "/tmp", "exact_mass.max_len=4"), "evaluate", check_paths=False)


def test_evaluate_writes_the_exact_metrics(smoke_sft, smoke_data, tmp_path):
    """(e) evaluate on the smoke SFT checkpoint: the exact keys on the policy pair only (once per split),
    per problem in per_problem.json, in eval.json and MLflow; KL 0 against itself, > 0 against another π_ref."""
    from spolab import evaluate
    from spolab.models.build import load_model

    out, _ = smoke_sft
    ref = tmp_path / "ref"  # another π_ref: the SFT model with its weights perturbed
    other = load_model(out / "model")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    other.save_pretrained(ref)
    for name, ref_dir in (("self", out / "model"), ("other", ref)):
        cfg = smoke_cfg("evaluate", tmp_path, f"data_dir={smoke_data}", f"model_dir={out}/model", f"name={name}",
                        f"ref_model_dir={ref_dir}", f"out_dir={tmp_path}/{name}", "splits=[test,ood]",
                        "protocols=[paper,policy]")
        res = evaluate.run(cfg)
        for split in ("test", "ood"):
            m, paper = res[f"{split}-policy"], res[f"{split}-paper"]
            assert not any("/exact/" in k for k in paper)
            P = m[f"{split}/exact/success_mass"]
            assert 0 < P <= m[f"{split}/exact/pass@5"] <= m[f"{split}/exact/pass@10"] <= 1
            assert m[f"{split}/exact/pass@1"] == pytest.approx(P)
            assert m[f"{split}/exact/success_mass_ci_lo"] <= P <= m[f"{split}/exact/success_mass_ci_hi"]
            assert m[f"{split}/exact/entropy_correct"] >= 0 and m[f"{split}/exact/n_programs"] >= 1
            if m[f"{split}/n_solved"]:  # smoke's SFT solves no ood problem: no correct sample to cover (null)
                assert 0.9 <= m[f"{split}/exact/coverage"] <= 1  # smoke: programs of <= 3 primitives
            else:
                assert m[f"{split}/exact/coverage"] is None
            # the sampled success rate estimates the exact mass (a lower bound: coverage < 1 misses some)
            assert abs(m[f"{split}/pass@1"] - P) < 0.08, (split, m[f"{split}/pass@1"], P)
            kl = m[f"{split}/exact/kl_ref_correct"]
            assert kl == 0.0 if name == "self" else 0 < kl < 10
            pp = json.loads((tmp_path / name / f"{split}-policy" / "per_problem.json").read_text())
            n = len(pp["problem_id"])
            for key in ("success_mass", "pass@1", "pass@10", "entropy_correct", "kl_ref_correct", "n_programs",
                        "coverage"):
                assert len(pp[f"exact/{key}"]) == n, key
            assert np.mean(pp["exact/success_mass"]) == pytest.approx(P)
            assert [c is None for c in pp["exact/coverage"]] == [c == 0 for c in pp["n_correct"]]
            saved = json.loads((tmp_path / name / f"{split}-policy" / "eval.json").read_text())
            assert saved[f"{split}/exact/pass@10"] == m[f"{split}/exact/pass@10"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("spolab-smoke").experiment_id],
                              filter_string="tags.protocol = 'policy' and tags.split = 'test'")
    assert runs and all("test/exact/pass_at_10" in r.data.metrics for r in runs)

    cfg = smoke_cfg("evaluate", tmp_path, f"data_dir={smoke_data}", f"model_dir={out}/model", "name=off",
                    f"out_dir={tmp_path}/off", "splits=[test]", "protocols=[policy]", "exact_mass.enabled=false")
    assert not any("/exact/" in k for k in evaluate.run(cfg)["test-policy"])
    lines = (tmp_path / "off" / "exact_logprobs.jsonl").read_text().splitlines()  # the DAG's output, header only
    assert len(lines) == 1 and json.loads(lines[0])["splits"] == {}


def test_the_exact_protocol_samples_nothing_and_reads_the_exact_mass(smoke_sft, smoke_data, tmp_path):
    """protocol `exact` (n 0): pass@k = the mean of 1 − (1 − P)^k, per problem n 0 and the exact values; after a
    policy pair it reuses that pair's mass (same numbers), alone it computes the same mass without samples
    (no coverage); and the analysis reads its pass@k from the mass (common.passk_value)."""
    import sys
    from pathlib import Path

    from spolab import evaluate

    out, _ = smoke_sft
    res = {}
    for name, protocols in (("both", "[policy,exact]"), ("alone", "[exact]")):
        cfg = smoke_cfg("evaluate", tmp_path, f"data_dir={smoke_data}", f"model_dir={out}/model", f"name={name}",
                        f"ref_model_dir={out}/model", f"out_dir={tmp_path}/{name}", "splits=[test]",
                        f"protocols={protocols}")
        res[name] = evaluate.run(cfg)
    policy, both, alone = res["both"]["test-policy"], res["both"]["test-exact"], res["alone"]["test-exact"]
    assert set(res["alone"]) == {"test-exact"}
    pp = json.loads((tmp_path / "alone" / "test-exact" / "per_problem.json").read_text())
    mass = np.array(pp["exact/success_mass"], dtype=float)
    assert pp["n"] == [0] * len(mass) and pp["n_correct"] == [0] * len(mass)
    assert not (tmp_path / "alone" / "test-exact" / "samples.jsonl").read_text().strip()  # nothing sampled
    for k in (1, 5, 10):
        expect = float(np.mean(1 - (1 - mass) ** k))
        assert alone[f"test/pass@{k}"] == pytest.approx(expect, rel=1e-9)
        assert alone[f"test/pass@{k}"] == alone[f"test/exact/pass@{k}"]
        assert both[f"test/pass@{k}"] == pytest.approx(policy[f"test/exact/pass@{k}"], rel=1e-12)  # reused
        assert both[f"test/pass@{k}"] == pytest.approx(alone[f"test/pass@{k}"], rel=1e-9)  # same mass either way
    assert alone["test/exact/coverage"] is None and both["test/exact/coverage"] == policy["test/exact/coverage"]
    assert "test/distinct_programs" not in alone  # no sampled metric under the exact protocol
    # sampled_splits=[test]: the sampling protocol runs on test only, the exact one on every split; the ood
    # mass is computed by the exact pair itself, test's is reused from the policy pair
    cfg = smoke_cfg("evaluate", tmp_path, f"data_dir={smoke_data}", f"model_dir={out}/model", "name=split",
                    f"ref_model_dir={out}/model", f"out_dir={tmp_path}/split", "splits=[test,ood]",
                    "protocols=[policy,exact]", "sampled_splits=[test]")
    split = evaluate.run(cfg)
    assert set(split) == {"test-policy", "test-exact", "ood-exact"}
    assert split["test-exact"]["test/pass@10"] == pytest.approx(both["test/pass@10"], rel=1e-9)
    ood = np.array(json.loads((tmp_path / "split" / "ood-exact" / "per_problem.json").read_text())["exact/success_mass"])
    assert len(ood) and split["ood-exact"]["ood/pass@10"] == pytest.approx(float(np.mean(1 - (1 - ood) ** 10)), rel=1e-9)
    from spolab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sampled_splits=\['val'\]: must be among splits"):
        evaluate.run(OmegaConf.merge(cfg, {"sampled_splits": ["val"]}))
    with pytest.raises(ConfigError, match=r"splits \['ood'\] would be evaluated under no protocol"):
        evaluate.run(OmegaConf.merge(cfg, {"protocols": ["policy"]}))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
    import pandas as pd

    from common import passk_value

    rows = pd.DataFrame({"protocol": "exact", "exact/success_mass": mass, "n": 0, "n_correct": 0})
    assert np.allclose(passk_value(10)(rows), 1 - (1 - mass) ** 10)
    sampled = pd.DataFrame({"protocol": "policy", "n": [20, 20], "n_correct": [0, 20]})
    assert passk_value(10)(sampled).tolist() == [0.0, 1.0]


def test_an_exact_protocol_needs_a_task_that_enumerates():
    from spolab.errors import ConfigError
    from spolab.validate import validate

    validate(smoke_cfg("evaluate", "/tmp", "protocols=[exact]"), "evaluate", check_paths=False)
    with pytest.raises(ConfigError, match="samples nothing .n 0.: its pass@k is the exact success mass"):
        validate(smoke_cfg("evaluate", "/tmp", "protocols=[exact]", "exact_mass.enabled=false"), "evaluate",
                 check_paths=False)
    with pytest.raises(ConfigError, match=re.escape("val_protocol.n=0: must be an integer in [1, 100000]")):
        validate(smoke_cfg("rl", "/tmp", "val_protocol.n=0"), "rl", check_paths=False)


def test_the_sft_evaluation_s_logprobs_replace_the_enumeration_and_pi_ref(smoke_sft, smoke_data, tmp_path):
    """The SFT evaluation (policy = π_ref) writes exact_logprobs.jsonl: every problem's enumerated programs, equal
    to a fresh enumeration, and its log-probs. An RL checkpoint's evaluation that reads it
    (exact_mass.ref_logprobs) gets bit-identical exact metrics, per problem too, to one that enumerates and runs
    π_ref itself. A file computed otherwise (another max_len, other π_ref weights, another split), or edited
    since it was written, is refused with one line."""
    import shutil

    from spolab import evaluate
    from spolab.errors import ConfigError
    from spolab.jsonl import BadFile
    from spolab.models.build import load_model
    from spolab.tasks.base import get_task
    from spolab.tasks.io import load_split
    from spolab.validate import MissingInput

    out, _ = smoke_sft
    sft = out / "model"
    other = tmp_path / "rl_model"  # an RL checkpoint: the SFT model perturbed
    model = load_model(sft)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(other)
    load_tokenizer(sft).save_pretrained(other)

    def run(name, model_dir, *extra, ref=sft):
        cfg = smoke_cfg("evaluate", tmp_path, f"data_dir={smoke_data}", f"model_dir={model_dir}", f"ref_model_dir={ref}",
                        f"name={name}", f"out_dir={tmp_path}/{name}", "splits=[test,ood]", "protocols=[policy]", *extra)
        return evaluate.run(cfg)

    run("sft", sft)
    ref_file = tmp_path / "sft" / "exact_logprobs.jsonl"
    lines = [json.loads(line) for line in ref_file.read_text().splitlines()]
    header, rows = lines[0], lines[1:]
    task = get_task(smoke_cfg("evaluate", tmp_path).task)
    assert header["max_len"] == task.enumeration_size() == 3 and sorted(header["splits"]) == ["ood", "test"]
    for split in ("test", "ood"):
        problems = load_split(smoke_data, split)
        assert header["splits"][split]["problems"] == len(problems)
        assert [(r["problem_id"], r["programs"]) for r in rows if r["split"] == split] == [
            (p.id, task.enumerate_solutions(p)) for p in problems]  # the cached enumeration is a fresh one
    fresh = run("fresh", other)
    cached = run("cached", other, f"exact_mass.ref_logprobs={ref_file}")
    for split in ("test", "ood"):
        exact = {k: v for k, v in fresh[f"{split}-policy"].items() if "/exact/" in k}
        assert len(exact) > 10 and exact == {k: v for k, v in cached[f"{split}-policy"].items() if "/exact/" in k}
        assert exact[f"{split}/exact/kl_ref_correct"] > 0
        pp = [json.loads((tmp_path / name / f"{split}-policy" / "per_problem.json").read_text())
              for name in ("fresh", "cached")]
        assert {k: v for k, v in pp[0].items() if k.startswith("exact/")} == {
            k: v for k, v in pp[1].items() if k.startswith("exact/")}
    assert (tmp_path / "fresh" / "exact_logprobs.jsonl").read_bytes() == (
        tmp_path / "cached" / "exact_logprobs.jsonl").read_bytes()  # the same programs and policy log-probs

    refusals = [
        (("exact_mass.max_len=2",), sft, ConfigError, "computed with max_len .* 3, this evaluation uses 2"),
        ((), other, ConfigError, "weights differ from ref_model_dir"),
    ]
    for extra, ref, error, message in refusals:
        with pytest.raises(error, match=message) as e:
            run("refused", other, f"exact_mass.ref_logprobs={ref_file}", *extra, ref=ref)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="holds no val split"):
        run("refused", other, f"exact_mass.ref_logprobs={ref_file}", "splits=[val]")
    with pytest.raises(MissingInput, match="does not exist: run `python -m spolab.evaluate` of π_ref"):
        run("refused", other, f"exact_mass.ref_logprobs={tmp_path}/none.jsonl")
    edited = tmp_path / "edited"
    edited.mkdir()
    shutil.copy(ref_file, edited / ref_file.name)
    shutil.copy(ref_file.parent / "manifest.json", edited / "manifest.json")
    text = (edited / ref_file.name).read_text()
    (edited / ref_file.name).write_text(text.replace('"logp": [-', '"logp": [-1', 1))
    with pytest.raises(BadFile, match="sha256 differs") as e:
        run("refused", other, f"exact_mass.ref_logprobs={edited / ref_file.name}")
    assert "\n" not in str(e.value)
