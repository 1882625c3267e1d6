"""Every entry point validates its config at start-up, before any model load,
sample or file write. A bad value is one line naming the key, the value and the valid range; the
command exits 2 without a traceback (``SPOLAB_DEBUG=1`` shows one); missing inputs never reach the
network; infeasible task settings fail fast."""

from __future__ import annotations

import errno
import importlib
import random
import shutil
import subprocess
import sys

import pytest

from conftest import ONE_THREAD, smoke_cfg
from spolab import config
from spolab.config import CONF_DIR, load_config
from spolab.errors import ConfigError, OperationalError
from spolab.validate import ENTRIES, MissingInput, validate

SCALES = sorted(p.stem for p in (CONF_DIR / "scale").glob("*.yaml"))
NO_DIR = "/nonexistent/spolab-input"


@pytest.fixture(scope="module")
def inputs(smoke_data, tmp_path_factory):
    """Real smoke data plus stand-ins for the other inputs: validation checks that they exist, and
    every case fails before anything would load them."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "sft" / "model").mkdir(parents=True)
    (root / "sft" / "model" / "config.json").write_text("{}\n")
    (root / "q0").mkdir()
    (root / "q0" / "q0.json").write_text('{"n_ref": 16, "successes": {}}\n')
    (root / "sources").mkdir()
    for src in ("expert", "other_policy", "decoding", "random"):
        (root / "sources" / f"{src}.jsonl").write_text("{}\n")
    (root / "ppo").mkdir()
    (root / "ppo" / "trajectories.jsonl").write_text("{}\n")
    conf = root / "conf"  # conf/protocol with two bad protocols, for evaluate
    shutil.copytree(CONF_DIR, conf)
    (conf / "protocol" / "bad.yaml").write_text("name: bad\nn: 20\ntemperature: 1.0\ntop_p: 0\nks: [1, 5]\n")
    (conf / "protocol" / "big_k.yaml").write_text("name: big_k\nn: 5\ntemperature: 1.0\ntop_p: 1.0\nks: [1, 10]\n")
    model = root / "sft" / "model"
    good = {
        "data": [],
        "sft": [f"data_dir={smoke_data}"],
        "rl": [f"data_dir={smoke_data}", f"sft_dir={model}", f"q0_path={root}/q0/q0.json",
               f"sources_dir={root}/sources", f"earlier_run_path={root}/ppo/trajectories.jsonl"],
        "evaluate": [f"data_dir={smoke_data}", f"model_dir={model}"],
        "q0": [f"data_dir={smoke_data}", f"sft_dir={model}"],
        "sources": [f"data_dir={smoke_data}", f"sft_dir={model}"],
        "bench": [f"data_dir={smoke_data}"],
        "exact": [],
    }
    return {"root": root, "conf": conf, "good": good}


@pytest.fixture(autouse=True)
def bad_protocols(request, monkeypatch):
    """evaluate reads conf/protocol/<name>.yaml (spolab.config.protocol_path): point it at the copy holding
    bad.yaml and big_k.yaml."""
    if "inputs" in request.fixturenames:
        monkeypatch.setattr(config, "CONF_DIR", request.getfixturevalue("inputs")["conf"])


def compose(entry, inputs, tmp_path, *overrides):
    return smoke_cfg(entry, tmp_path, *inputs["good"][entry], f"out_dir={tmp_path}/out", *overrides)


# (entry, overrides, substrings of the one-line message); every case names its key and value
CASES = [
    # ---- rl: the tester's cases
    ("rl", ["algo.beta=0.0"], ["algo.beta=0.0: must be > 0"]),
    ("rl", ["batch_size=0"], ["batch_size=0: must be an integer in [1, 65536]"]),
    ("rl", ["group_size=0"], ["group_size=0: must be an integer >= 1"]),
    ("rl", ["ckpt_every=0"], ["ckpt_every=0: must be an integer >= 1"]),
    ("rl", ["val_protocol.top_p=0"], ["val_protocol.top_p=0: must be in (0, 1]"]),
    ("rl", [f"sft_dir={NO_DIR}"], [f"sft_dir='{NO_DIR}': must be a local model directory", "python -m spolab.sft"]),
    ("rl", ["sft_dir=null"], ["sft_dir=None: must be a local model directory", "not null", "python -m spolab.sft"]),
    ("rl", ["updates=-5"], ["updates=-5: must be an integer in [1, 1000000]"]),
    ("rl", ["updates=10000000000"], ["updates=10000000000: must be an integer in [1, 1000000]"]),
    ("rl", ["batch_size=1e20"], ["batch_size=1e+20: must be an integer in [1, 65536]"]),
    ("rl", ["batch_size=100000000000000000000"], ["batch_size=100000000000000000000: must be an integer in [1, 65536]"]),
    ("rl", ["task.max_new_tokens=1000000"], ["task.max_new_tokens=1000000: must be an integer in [1, 32768]"]),
    ("rl", ["val_protocol.n=1000000"], ["val_protocol.n=1000000: must be an integer in [1, 100000]"]),
    ("rl", ["algo=grpo", "algo.beta=-1"], ["algo.beta=-1: must be >= 0"]),
    ("rl", ["seed=abc"], ["seed='abc': must be an integer"]),
    # ---- rl: more values
    ("rl", ["algo.lr=0"], ["algo.lr=0: must be > 0"]),
    ("rl", ["algo=ppo", "algo.lr=-2e-5"], ["algo.lr=-2e-05: must be > 0"]),
    ("rl", ["algo=ppo", "algo.epochs=-1"], ["algo.epochs=-1: must be an integer >= 1"]),
    ("rl", ["algo.loss=hinge"], ["algo.loss='hinge': must be one of ['bce', 'squared']"]),
    ("rl", ["algo.q0_estimator=bayes"], ["algo.q0_estimator='bayes': must be one of ['plain', 'shrunk']"]),
    ("rl", ["algo.is_weights=full"], ["algo.is_weights='full': must be one of ['none', 'truncated']"]),
    ("rl", ["algo=ppo", "algo.loss_reduction=mean"], ["algo.loss_reduction='mean': must be one of ['seq-mean-"]),
    ("rl", ["algo.steps_per_batch=0"], ["algo.steps_per_batch=0: must be an integer >= 1"]),
    ("rl", ["algo.name=foo"], ["algo.name='foo': must be one of ['grpo', 'ppo', 'rloo', 'spo']"]),
    ("rl", ["algo.grad_clip=0"], ["algo.grad_clip=0: must be > 0"]),
    ("rl", ["temperature=0"], ["temperature=0: must be > 0"]),
    ("rl", ["eval_every=0"], ["eval_every=0: must be an integer >= 1"]),
    ("rl", ["log_every=0"], ["log_every=0: must be an integer >= 1"]),
    ("rl", ["val_problems=0"], ["val_problems=0: must be an integer in [1, 10000000]"]),
    ("rl", ["replay_capacity=0"], ["replay_capacity=0: must be an integer in [1, 10000000]"]),
    ("rl", ["val_protocol.ks=[1,20]"], ["val_protocol.ks[1]=20: must be <= val_protocol.n=10"]),
    ("rl", ["task.reward=partial"], ["task.reward='partial': must be one of ['binary', 'fraction']"]),
    ("rl", ["task.max_new_tokens=0"], ["task.max_new_tokens=0: must be an integer in [1, 32768]"]),
    # ---- rl: cross-field rules
    ("rl", ["algo=ppo", "algo.minibatches=3"], ["algo.minibatches=3: must divide batch_size=64"]),
    ("rl", ["algo=grpo", "group_size=1"], ["group_size=1: must be an integer >= 2 for algo=grpo"]),
    ("rl", ["algo=rloo", "group_size=1"], ["group_size=1: must be an integer >= 2 for algo=rloo"]),
    ("rl", ["batch_size=60"], ["batch_size=60: must be a multiple of group_size=8"]),
    ("rl", ["algo.group_size=4"], ["algo.group_size=4: must equal group_size=8"]),
    ("rl", ["algo.loss=bce", "task.reward=fraction"], ["task.reward='fraction': must be 'binary' with algo.loss='bce'"]),
    ("rl", ["data_mix.sync_every=0"], ["data_mix.sync_every=0: must be an integer >= 1"]),
    ("rl", ["data_mix.fresh_fraction=0.3"], ["data_mix=online: fresh_fraction + source shares", "sum to 1"]),
    ("rl", ["data_mix=expert", "data_mix.fresh_fraction=0.4", "data_mix.sources.expert=0.6"],
     ["data_mix.fresh_fraction=0.4: must give a multiple of group_size=8 fresh samples"]),
    ("rl", ["algo=grpo", "data_mix=half_online"], ["algo=grpo is on-policy but data_mix=half_online"]),
    # ---- rl: inputs
    ("rl", [f"data_dir={NO_DIR}"], [f"data_dir='{NO_DIR}': must be a dataset directory", "python -m spolab.data"]),
    ("rl", [f"q0_path={NO_DIR}/q0.json"], [f"q0_path='{NO_DIR}/q0.json'", "python -m spolab.q0"]),
    ("rl", ["data_mix=expert", f"sources_dir={NO_DIR}"], [f"sources_dir='{NO_DIR}': must hold expert.jsonl",
                                                          "python -m spolab.sources"]),
    ("rl", ["data_mix=earlier_run", f"earlier_run_path={NO_DIR}/t.jsonl"],
     [f"earlier_run_path='{NO_DIR}/t.jsonl'", "run the study's PPO run first"]),
    # ---- sft
    ("sft", ["sft.batch_size=0"], ["sft.batch_size=0: must be an integer in [1, 65536]"]),
    ("sft", ["sft.epochs=-1"], ["sft.epochs=-1: must be an integer in [1, 1000000]"]),
    ("sft", ["sft.lr=0"], ["sft.lr=0: must be > 0"]),
    ("sft", ["sft.targets=best"], ["sft.targets='best': must be one of ['all_solvers', 'generator']"]),
    ("sft", ["sft.ckpt_every=0"], ["sft.ckpt_every=0: must be an integer >= 1"]),
    ("sft", ["sft.eval_every=-1"], ["sft.eval_every=-1: must be an integer >= 0"]),
    ("sft", ["sft.min_lr_ratio=2"], ["sft.min_lr_ratio=2: must be in [0, 1]"]),
    ("sft", ["val_protocol.temperature=0"], ["val_protocol.temperature=0: must be > 0"]),
    ("sft", ["model.num_heads=5"], ["model.hidden_size=48: must be a multiple of 2 x model.num_heads=5"]),
    ("sft", ["model.max_positions=32"], ["model.max_positions=32: must be >= 62"]),
    # the task's own SFT checks (Task.check_sft): a flawed target has one primitive more than max_prims
    ("sft", ["sft.flaw_rate=0.5", "task.max_new_tokens=12"],
     ["task.max_new_tokens=12: must be >= 16 with sft.flaw_rate=0.5"]),
    ("sft", ["task=humaneval", "sft.flaw_rate=0.5"], ["sft.flaw_rate=0.5: must be 0 for task=humaneval"]),
    ("sft", ["model.name_or_path=gpt2"], ["model.name_or_path='gpt2': must be null or a local model directory"]),
    ("sft", [f"data_dir={NO_DIR}"], [f"data_dir='{NO_DIR}'", "python -m spolab.data"]),
    # ---- evaluate
    ("evaluate", ["protocols=[bad]"], ["protocol[bad].top_p=0: must be in (0, 1]", "bad.yaml"]),
    ("evaluate", ["protocols=[big_k]"], ["protocol[big_k].ks[1]=10: must be <= protocol[big_k].n=5"]),
    ("evaluate", ["+n_problems.test=-1"], ["n_problems.test=-1: must be null or an integer >= 1"]),
    ("evaluate", ["seed=abc"], ["seed='abc': must be an integer"]),
    ("evaluate", ["splits=[train]"], ["splits[0]='train': must be one of"]),
    ("evaluate", ["splits=[]"], ["splits=[]: must be a non-empty list"]),
    ("evaluate", ["protocols=[greedy]"], ["protocols[0]='greedy': must name a file of conf/protocol"]),
    ("evaluate", ["forward_batch_size=0"], ["forward_batch_size=0: must be an integer in [1, 65536]"]),
    ("evaluate", [f"model_dir={NO_DIR}"], [f"model_dir='{NO_DIR}': must be a local model directory"]),
    ("evaluate", ["model_dir=null"], ["model_dir=None: must be a local model directory"]),
    ("evaluate", [f"ref_model_dir={NO_DIR}"], [f"ref_model_dir='{NO_DIR}': must be a local model directory"]),
    ("evaluate", [f"data_dir={NO_DIR}"], [f"data_dir='{NO_DIR}'", "test.jsonl"]),
    ("evaluate", ["ref_model_dir=null", f"exact_mass.ref_logprobs={NO_DIR}/exact_logprobs.jsonl"],
     ["exact_mass.ref_logprobs=", "needs ref_model_dir"]),
    # ---- data (the task settings every entry shares)
    ("data", ["task.n_classes=100000", "task.max_prims=1"], ["task.n_classes=100000: must be <= 26",
                                                             "task.max_prims=1"]),
    ("data", ["task.n_classes=400", "task.max_prims=2"],  # under the bound, but only ~200 classes exist
     ["task.n_classes=400: only ", "distinct non-trivial behaviour classes found with task.max_prims=2"]),
    ("data", ["task.n_tests=0"], ["task.n_tests=0: must be an integer >= 1"]),
    ("data", ["task.n_examples=0"], ["task.n_examples=0: must be an integer >= 1"]),
    ("data", ["task.ood_fraction=1.5"], ["task.ood_fraction=1.5: must be in (0, 1)"]),
    ("data", ["+task.splits.train=5"], ["task.splits.train=5: unknown split"]),
    ("data", ["task.splits.sft=-1"], ["task.splits.sft=-1: must be an integer >= 0"]),
    ("data", ["task.max_prims=0"], ["task.max_prims=0: must be an integer >= 1"]),
    ("data", ["task.solvers_for=[train]"], ["task.solvers_for[0]='train': must be one of"]),
    ("data", ["task.max_new_tokens=8"], ["task.max_new_tokens=8: must be >= 12"]),
    ("data", ["task.n_classes=2", "task.ood_fraction=0.9"], ["task.n_classes=2: must leave at least one class"]),
    ("data", ["seed=-1"], ["seed=-1: must be an integer >= 0"]),
    ("data", ["seed=1.5"], ["seed=1.5: must be an integer >= 0"]),
    # ---- q0 and sources
    ("q0", ["n_ref=0"], ["n_ref=0: must be an integer in [1, 100000]"]),
    ("q0", ["forward_batch_size=0"], ["forward_batch_size=0: must be an integer in [1, 65536]"]),
    ("q0", ["sft_dir=null"], ["sft_dir=None: must be a local model directory"]),
    ("q0", [f"sft_dir={NO_DIR}"], [f"sft_dir='{NO_DIR}'", "python -m spolab.sft"]),
    ("q0", [f"data_dir={NO_DIR}"], [f"data_dir='{NO_DIR}'", "rl.jsonl"]),
    ("sources", ["problems=0"], ["problems=0: must be an integer in [1, 10000000]"]),
    ("sources", ["other_policy.temperature=0"], ["other_policy.temperature=0: must be > 0"]),
    # ---- bench and exact
    ("bench", ["repeats=0"], ["repeats=0: must be an integer in [1, 1000000]"]),
    ("bench", ["variants=[spo,dpo]"], ["variants[1]='dpo': must be one of"]),
    ("bench", ["variants=[spo,rloo]", "group_size=1"],
     ["group_size=1: must be an integer >= 2 for the grpo, rloo and trl_grpo variants"]),
    ("exact", ["exact.beta=0"], ["exact.beta=0: must be > 0"]),
    ("exact", ["exact.L=1000000000"], ["exact.L=1000000000: must keep the testbed to <= 1000000 responses"]),
]


@pytest.mark.parametrize("entry,overrides,expect", CASES, ids=[f"{e}:{' '.join(o)}" for e, o, _ in CASES])
def test_bad_value_fails_before_any_work(entry, overrides, expect, inputs, tmp_path):
    cfg = compose(entry, inputs, tmp_path, *overrides)
    run = importlib.import_module(f"spolab.{entry}").run
    with pytest.raises(ConfigError) as info:
        run(cfg)
    msg = str(info.value)
    assert msg and "\n" not in msg
    for part in expect:
        assert part in msg
    assert not (tmp_path / "out").exists(), "something was written before the error"
    assert not (tmp_path / "mlflow.db").exists(), "an MLflow database was created before the error"


def test_enough_cases():
    assert len(CASES) >= 44
    assert {e for e, _, _ in CASES} >= {"rl", "sft", "evaluate", "data", "q0"}


@pytest.mark.parametrize("entry", ["rl", "sft", "evaluate", "q0", "sources", "data", "bench", "exact"])
def test_the_good_inputs_pass(entry, inputs, tmp_path):
    """The base of every case above validates, paths included: each case fails on its own value."""
    validate(compose(entry, inputs, tmp_path), entry)


def test_missing_inputs_are_config_and_file_errors(inputs, tmp_path):
    cfg = compose("rl", inputs, tmp_path, f"sft_dir={NO_DIR}")
    with pytest.raises(MissingInput) as info:
        validate(cfg, "rl")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, FileNotFoundError)
    assert info.value.kind == "missing input"


@pytest.fixture
def new_algo():
    """Registers a test algorithm under algo.name ``probe`` (PPO's config keys) for one test; yields its class."""
    from spolab.algos import ALGORITHMS, Algorithm
    from spolab.validate import integer

    class Probe(Algorithm):
        name = "probe"
        needs_q0 = True
        min_group_size = 3
        config_rules = [("algo.epochs", integer(2))]

    ALGORITHMS["probe"] = Probe
    try:
        yield Probe
    finally:
        del ALGORITHMS["probe"]


def test_a_new_algorithm_needing_q0_gets_the_q0_path_check(new_algo, inputs, tmp_path):
    """validate asks the registered class (needs_q0), not the algorithm's name."""
    ok = compose("rl", inputs, tmp_path, "algo=ppo", "algo.name=probe", "algo.epochs=2", "batch_size=48",
                 "group_size=3")
    validate(ok, "rl")
    cfg = compose("rl", inputs, tmp_path, "algo=ppo", "algo.name=probe", "algo.epochs=2", "batch_size=48",
                  "group_size=3", f"q0_path={NO_DIR}/q0.json")
    with pytest.raises(MissingInput, match=rf"q0_path='{NO_DIR}/q0.json'.*python -m spolab.q0"):
        validate(cfg, "rl")
    new_algo.needs_q0 = False
    validate(cfg, "rl")  # without needs_q0 nothing reads q0_path


def test_a_new_algorithm_brings_its_own_rules(new_algo, inputs, tmp_path):
    """Its config_rules and min_group_size apply as a shipped algorithm's do, with the same messages."""
    base = ["algo=ppo", "algo.name=probe", "batch_size=48"]
    with pytest.raises(ConfigError, match=r"^algo.epochs=1: must be an integer >= 2$"):
        validate(compose("rl", inputs, tmp_path, *base, "group_size=3", "algo.epochs=1"), "rl")
    with pytest.raises(ConfigError, match=r"^group_size=2: must be an integer >= 3 for algo=probe"):
        validate(compose("rl", inputs, tmp_path, *base, "group_size=2", "algo.epochs=2"), "rl")


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_shipped_config_validates(entry, scale):
    """Each entry as the workflow composes it at the scale: a scale whose file sets rl_lora (paper) runs rl
    with lora=on (without it, its memory plan refuses full fine-tuning: tests/test_plan.py)."""
    from spolab.study import scale_rl_lora

    lora = ["lora=on"] if entry == "rl" and scale_rl_lora(scale) else []
    validate(load_config(entry, [f"scale={scale}", *lora]), entry, check_paths=False)


@pytest.mark.parametrize("scale", SCALES)
def test_every_study_run_and_algo_validates(scale):
    """Every entry the default study runs at the scale (an entry whose seed list is empty there does not run:
    SPO bce at the HumanEval scales, whose reward is not binary), as the rules compose it, lr included."""
    from spolab.study import entries, load_study, scale_rl_lora

    specs = load_study("default", scale)
    assert specs, f"the default study runs nothing at scale={scale}"
    for e in entries(specs).values():
        cfg = load_config("rl", [f"scale={scale}", *e.override_list])
        validate(cfg, "rl", check_paths=False)
    lora = ["lora=on"] if scale_rl_lora(scale) else []
    for algo in ("spo", "ppo", "grpo", "rloo"):
        validate(load_config("rl", [f"scale={scale}", f"algo={algo}", *lora]), "rl", check_paths=False)


def test_stalled_class_sampling_gives_up_fast():
    """sample_classes itself stops when no new class turns up (validate's bound aside)."""
    from spolab.tasks.problems import sample_classes

    with pytest.raises(ConfigError, match=r"task.n_classes=100000: only 19 distinct non-trivial behaviour "
                                          r"classes found with task.max_prims=1"):
        sample_classes(random.Random("0-classes"), 100000, 1)
    with pytest.raises(ConfigError, match=r"task.n_classes=100000: only \d+ distinct .* task.max_prims=4 .*; lower"):
        sample_classes(random.Random("0-classes"), 100000, 4)
    assert len(sample_classes(random.Random("0-classes"), 40, 3)) == 40  # the smoke task is unaffected


# ------------------------------------------------------------------------------------------ through the CLI


def cli(entry, tmp_path, *overrides, env=None):
    cmd = [sys.executable, "-m", f"spolab.{entry}", "scale=smoke", f"out_dir={tmp_path}/out"]
    if entry != "data":
        cmd += [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_root={tmp_path}/art"]
    return subprocess.run([*cmd, *overrides], cwd=tmp_path, env={**ONE_THREAD, **(env or {})},
                          capture_output=True, text=True, timeout=300)


CLI_CASES = [
    ("rl", ["algo.beta=0.0"], "spolab.rl: configuration error: algo.beta=0.0: must be > 0"),
    ("rl", ["sft_dir=null"], "spolab.rl: missing input: sft_dir=None"),
    ("sft", ["sft.batch_size=0"], "spolab.sft: configuration error: sft.batch_size=0: must be an integer in [1, 65536]"),
    ("evaluate", ["+n_problems.test=-1"], "spolab.evaluate: configuration error: n_problems.test=-1"),
    ("data", ["task.n_classes=100000", "task.max_prims=1"], "spolab.data: configuration error: task.n_classes=100000"),
    ("q0", [f"sft_dir={NO_DIR}"], f"spolab.q0: missing input: sft_dir='{NO_DIR}'"),
]


@pytest.mark.parametrize("entry,overrides,line", CLI_CASES, ids=[f"{e}:{' '.join(o)}" for e, o, _ in CLI_CASES])
def test_cli_one_line_exit_2(entry, overrides, line, tmp_path):
    res = cli(entry, tmp_path, *overrides)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert "huggingface" not in (res.stderr + res.stdout).lower()  # no hub lookup for a missing model
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out" / "metrics.jsonl").exists()


def test_cli_protocol_file_with_top_p_0(inputs, tmp_path):
    """A protocol file of conf/protocol with top_p 0 (SPOLAB_CONF_DIR: a copy of conf/ holding it)."""
    res = cli("evaluate", tmp_path, *inputs["good"]["evaluate"], "protocols=[bad]",
              env={"SPOLAB_CONF_DIR": str(inputs["conf"])})
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "protocol[bad].top_p=0: must be in (0, 1]" in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_cli_debug_shows_the_traceback(tmp_path):
    res = cli("rl", tmp_path, "algo.beta=0.0", env={"SPOLAB_DEBUG": "1"})
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "ConfigError" in res.stderr and "algo.beta=0.0" in res.stderr


# ------------------------------------------------------------------------------------------ the wrapper itself


def report(run, cfg=None):
    """What every ``main`` does around ``run(cfg)`` (spolab.cli), without a subprocess."""
    from spolab.cli import one_line_errors

    with one_line_errors("spolab.data"):
        run(cfg)


def test_wrapper_reports_enospc_with_the_file(capsys, monkeypatch):
    monkeypatch.delenv("SPOLAB_DEBUG", raising=False)

    def run(cfg):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/out/sft.jsonl.tmp")
        except OSError as e:
            raise RuntimeError("while writing the dataset") from e  # anywhere in the chain

    with pytest.raises(SystemExit) as info:
        report(run)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["spolab.data: operational error: no space left on device (ENOSPC) writing "
                   "/data/out/sft.jsonl.tmp: free space on that disk (or point out_dir / tracking at another one) "
                   "and rerun the same command"]


def test_wrapper_passes_other_errors_and_debug(capsys, monkeypatch):
    monkeypatch.delenv("SPOLAB_DEBUG", raising=False)

    def bug(cfg):
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        report(bug)

    def locked(cfg):
        raise OperationalError("database is locked: /x/mlflow.db")

    with pytest.raises(SystemExit):
        report(locked)
    assert capsys.readouterr().err.strip() == "spolab.data: operational error: database is locked: /x/mlflow.db"
    monkeypatch.setenv("SPOLAB_DEBUG", "1")
    with pytest.raises(OperationalError):
        report(locked)


def fill(mount) -> None:
    with open(mount.path / "filler", "wb", buffering=0) as f:
        with pytest.raises(OSError) as full:
            while True:
                f.write(b"\0" * 65536)
    assert full.value.errno == errno.ENOSPC


def test_enospc_writing_the_dataset(tmpfs, tmp_path, capsys, monkeypatch):
    """A real full disk under the step's own writes (a write() error carries no file name)."""
    monkeypatch.delenv("SPOLAB_DEBUG", raising=False)
    from spolab import data

    fill(tmpfs)
    cfg = smoke_cfg("data", tmp_path, f"out_dir={tmpfs.path}/data")
    with pytest.raises(SystemExit) as info:
        report(data.run, cfg)
    assert info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    assert last.startswith("spolab.data: operational error: no space left on device (ENOSPC) writing "
                           f"{tmpfs.path}/data/"), last


def test_cli_enospc_in_hydras_own_writes(tmpfs, tmp_path):
    """The run folder is Hydra's: on a full disk its first write (.hydra/config.yaml) fails, before run()."""
    fill(tmpfs)
    res = cli("data", tmp_path, f"out_dir={tmpfs.path}/data")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"spolab.data: operational error: no space left on device (ENOSPC) writing {tmpfs.path}/data/"), res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_cli_bad_override_is_one_line(tmp_path):
    res = cli("data", tmp_path, "tracking.uri=null")  # data has no tracking group
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spolab.data: configuration error: Could not override "
                                                   "'tracking.uri'"), res.stderr
