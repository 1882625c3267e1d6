"""Fault injection: damaged input files, bad configs, a diverging run, two writers on one run folder,
and Snakemake's lock. Each test really damages a file, really starts the processes it is about, and
checks what the user sees: one line, exit status 2, nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import rl_cfg
from spolab.config import CONF_DIR, check_keys
from spolab.errors import ConfigError
from spolab.jsonl import BadFile, read_jsonl
from spolab.rollout.trajectories import load_trajectories
from spolab.tasks.io import load_split

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(entry: str, cwd: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", f"spolab.{entry}", "scale=smoke"]
    if entry != "data":
        cmd += [f"tracking.uri=sqlite:///{cwd}/mlflow.db", f"tracking.artifact_root={cwd}/art"]
    return subprocess.run([*cmd, *overrides], cwd=cwd, env={**ONE_THREAD, **(env or {})}, capture_output=True,
                          text=True)


def one_line(res: subprocess.CompletedProcess, start: str) -> str:
    assert res.returncode == 2, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), res.stderr[-3000:]
    assert "Traceback" not in res.stderr + res.stdout
    return lines[0]


def damaged_copy(smoke_data: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(smoke_data, data)
    return data


def replace_line(path: Path, n: int, text: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines[n - 1] = text + "\n"
    path.write_text("".join(lines))


# ------------------------------------------------------------------------------------------ bad files


def test_a_malformed_split_line_names_file_and_line(smoke_data, tmp_path):
    data = damaged_copy(smoke_data, tmp_path)
    (data / "manifest.json").unlink()  # without the checksums, the parser itself meets the bad line
    replace_line(data / "rl.jsonl", 150, '{"id": "rl-000149", "split": "rl",')
    with pytest.raises(BadFile) as info:
        load_split(data, "rl")
    msg = str(info.value)
    assert msg.startswith(f"{data}/rl.jsonl, line 150: not valid JSON") and "\n" not in msg
    assert "snakemake --forcerun data" in msg


def test_a_record_with_missing_fields_names_them(smoke_data, tmp_path):
    data = damaged_copy(smoke_data, tmp_path)
    (data / "manifest.json").unlink()
    rows = read_jsonl(data / "val.jsonl")
    del rows[6]["tests"], rows[6]["examples"]
    (data / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BadFile, match=r"val.jsonl, line 7: missing field\(s\) 'examples', 'tests' \(a Problem record"):
        load_split(data, "val")


def test_an_edited_split_fails_its_checksum(smoke_data, tmp_path):
    """A file edited after the data step wrote it (Snakemake does not notice: it is newer than its inputs)
    is refused, even when every line still parses."""
    data = damaged_copy(smoke_data, tmp_path)
    rows = read_jsonl(data / "rl.jsonl")
    rows[0]["tests"] = rows[0]["tests"][:1]
    (data / "rl.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    with pytest.raises(BadFile, match=r"rl.jsonl: its sha256 differs from the one .*manifest.json recorded .* "
                                      r"`snakemake --forcerun data`"):
        load_split(data, "rl")
    assert len(load_split(smoke_data, "rl")) == 200  # the intact folder passes


def test_cli_damaged_data_is_one_line(smoke_q0, smoke_data, tmp_path):
    data = damaged_copy(smoke_data, tmp_path)
    replace_line(data / "rl.jsonl", 120, "not json")
    res = cli("q0", tmp_path, f"data_dir={data}", f"sft_dir={smoke_data.parent}/sft/model", f"out_dir={tmp_path}/q0")
    line = one_line(res, f"spolab.q0: bad input file: {data}/rl.jsonl: its sha256 differs")
    assert "snakemake --forcerun data" in line
    assert not (tmp_path / "q0").exists()  # refused at start-up, before Hydra made the run folder
    (data / "manifest.json").unlink()  # now the parser meets the line (after the model loaded: its progress bar)
    res = cli("q0", tmp_path, f"data_dir={data}", f"sft_dir={smoke_data.parent}/sft/model", f"out_dir={tmp_path}/q0")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"spolab.q0: bad input file: {data}/rl.jsonl, line 120: "
                                                          "not valid JSON"), res.stderr[-2000:]


def test_a_bad_trajectory_line(tmp_path):
    good = {"problem_id": "rl-000000", "prompt_ids": [1, 2], "response_ids": [3], "reward": 1.0, "success": True,
            "source": "expert"}
    path = tmp_path / "expert.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "rewrd": 1.0}) + "\n")
    with pytest.raises(BadFile, match=r"expert.jsonl, line 2: unknown field\(s\) 'rewrd'"):
        load_trajectories(path)
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({k: v for k, v in good.items() if k != "reward"}) + "\n")
    with pytest.raises(BadFile, match=r"expert.jsonl, line 3: missing field\(s\) 'reward'"):
        load_trajectories(path)
    path.write_text(json.dumps(good) + "\n")
    assert load_trajectories(path)[0].reward == 1.0


# ------------------------------------------------------------------------------------------ bad configs


def test_cli_yaml_syntax_error_names_file_line_column(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    scale = conf / "scale" / "smoke.yaml"
    text = scale.read_text().replace("\nupdates: 6\n", "\nupdates: [6\n")
    assert text != scale.read_text()
    scale.write_text(text)
    res = cli("data", tmp_path, f"out_dir={tmp_path}/out", env={"SPOLAB_CONF_DIR": str(conf)})
    line = one_line(res, f"spolab.data: configuration error: {scale}, line ")
    assert "column" in line and "YAML syntax error" in line
    assert not (tmp_path / "out").exists()


def test_cli_unknown_key_is_refused_with_the_nearest_one(tmp_path):
    res = cli("rl", tmp_path, "+algo.betta=0.1", f"out_dir={tmp_path}/out")
    line = one_line(res, "spolab.rl: configuration error: algo.betta: no such key")
    assert "did you mean algo.beta?" in line and "+algo.betta=0.1" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_scale_file_with_an_unknown_key(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    with open(conf / "scale" / "smoke.yaml", "a") as f:
        f.write("algo:\n  betta: 0.1\nrepeatz: 3\n")
    res = cli("rl", tmp_path, f"out_dir={tmp_path}/out", env={"SPOLAB_CONF_DIR": str(conf)})
    line = one_line(res, "spolab.rl: configuration error: repeatz: no such key")
    assert "conf/scale/smoke.yaml" in line and "did you mean repeats?" in line and "algo.betta" in line


def test_shipped_configs_declare_every_key():
    for entry in ("data", "sft", "rl", "evaluate", "q0", "sources", "bench", "exact"):
        for scale in sorted(p.stem for p in (CONF_DIR / "scale").glob("*.yaml")):
            check_keys(entry, [f"scale={scale}"])
    for algo in ("spo", "ppo", "grpo", "rloo"):
        check_keys("rl", ["scale=smoke", f"algo={algo}", "++algo.beta=0.1", "+data_mix.sources.expert=0.5"])
    from omegaconf import OmegaConf

    for study in sorted((CONF_DIR / "study").glob("*.yaml")):  # every study run, as the Snakefile composes it
        for run in OmegaConf.load(study).runs.values():
            check_keys("rl", ["scale=smoke", *run.overrides.split()])
    with pytest.raises(ConfigError, match="task.max_new_tokenz: no such key .* did you mean task.max_new_tokens"):
        check_keys("evaluate", ["scale=smoke", "+task.max_new_tokenz=3"])


def test_cli_failed_validation_leaves_no_run_folder(tmp_path):
    for overrides in (["sft_dir=/nonexistent/sft"], ["updates=10000000000"], ["batch_size=1e20"]):
        res = cli("rl", tmp_path, *overrides, f"out_dir={tmp_path}/out")
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr[-2000:]
        assert not (tmp_path / "out").exists(), overrides
    assert "updates=10000000000: must be an integer in [1, 1000000]" in cli("rl", tmp_path, "updates=10000000000").stderr


# ------------------------------------------------------------------------------------------ divergence


@pytest.mark.parametrize("algo", ["spo", "ppo", "grpo"])
def test_divergence_stops_with_its_cause(algo, smoke_q0, tmp_path):
    """algo.lr=1e3 on the smoke scale: training stops at the update that diverged, names it, the quantity
    and algo.lr; no null loss reaches metrics.jsonl; the MLflow run is FAILED; the checkpoint stays."""
    import mlflow

    from spolab import rl
    from spolab.divergence import Diverged

    root = smoke_q0.parent
    cfg = rl_cfg(root, tmp_path, f"algo={algo}", "algo.lr=1e3", "ckpt_every=1", "eval_every=100")
    with pytest.raises(Diverged) as info:
        rl.run(cfg)
    msg = str(info.value)
    assert msg.startswith("update ") and "algo.lr=1000.0" in msg and "\n" not in msg, msg
    update = int(msg.split()[1])
    rows = read_jsonl(tmp_path / "rl" / "metrics.jsonl")
    assert all(v is not None for r in rows for v in r.values()), "a null metric was written"
    assert max((r.get("step", 0) for r in rows), default=0) < update
    ckpts = sorted(p.name for p in (tmp_path / "rl" / "checkpoint").glob("step_*"))
    assert (update > 1) == bool(ckpts) and all(int(c.split("_")[1]) < update for c in ckpts)
    mlflow.set_tracking_uri(cfg.tracking.uri)
    runs = mlflow.search_runs(experiment_names=[cfg.tracking.experiment], output_format="list")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_non_finite_sampling_distribution_is_a_divergence(tmp_path):
    """The sampler's own refusal (torch.multinomial on NaN probabilities: the weights after an update
    overflow the logits) is reported as the divergence it is, naming the update and algo.lr."""
    import torch
    from omegaconf import OmegaConf

    from spolab.divergence import Diverged, stop_on_divergence

    cfg = OmegaConf.create({"updates": 6, "out_dir": str(tmp_path), "algo": {"lr": 1000.0}})
    with pytest.raises(Diverged, match=r"^update 3 of 6: the policy's sampling log-probs are NaN or infinite .* "
                                       r"algo.lr=1000.0, .* no checkpoint was written before it$"):
        with stop_on_divergence(3, cfg):
            torch.multinomial(torch.tensor([[float("nan"), 1.0]]), 1)
    with pytest.raises(RuntimeError, match="other"), stop_on_divergence(3, cfg):  # any other error passes through
        raise RuntimeError("other")


# ------------------------------------------------------------------------------------------ one writer per folder


def data_cmd(out: Path, seed: int, sft: int = 20) -> list[str]:
    """A data build of a few seconds (tiny splits): a real entry point writing a real run folder."""
    return [sys.executable, "-m", "spolab.data", "scale=smoke", f"out_dir={out}", f"seed={seed}", "task.n_classes=10",
            f"task.splits={{sft: {sft}, rl: 10, val: 5, test: 5, ood: 5}}"]


def intact(out: Path, seed: int) -> bool:
    """The folder is exactly what one build of ``seed`` writes: every split passes its checksum and
    meta.json names that seed."""
    try:
        meta = json.loads((out / "meta.json").read_text())
        return meta["seed"] == seed and all(load_split(out, s) for s in ("sft", "rl", "val", "test", "ood"))
    except (OSError, ValueError, KeyError, BadFile):
        return False


def two_writers(tmp_path: Path, trial: int) -> tuple[bool, list[int], list[str]]:
    out = tmp_path / f"run{trial}"
    procs = [subprocess.Popen(data_cmd(out, seed), cwd=tmp_path, env=ONE_THREAD, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for seed in (trial, trial + 1000)]
    errs = [p.communicate()[1] for p in procs]
    codes = [p.returncode for p in procs]
    seeds = (trial, trial + 1000)
    if codes == [0, 0]:  # they did not overlap (one finished before the other started): the last build stands whole
        return any(intact(out, s) for s in seeds), codes, errs
    ok = sorted(codes) == [0, 2] and intact(out, seeds[codes.index(0)])
    return ok, codes, errs


def test_a_second_writer_stops_at_once(tmp_path):
    """A second writer started while the first holds the folder (held there: stopped with SIGSTOP once its
    lock names it, so the two surely overlap) exits 2 at once; the first then finishes its build whole."""
    out = tmp_path / "run0"
    first = subprocess.Popen(data_cmd(out, 0, sft=2000), cwd=tmp_path, env=ONE_THREAD, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = out / ".spolab.lock"
    while first.poll() is None and not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        time.sleep(0.01)
    assert first.poll() is None, first.communicate()[1][-2000:]  # it took the lock and is still writing
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run(data_cmd(out, 1000), cwd=tmp_path, env=ONE_THREAD, capture_output=True, text=True)
    finally:
        first.send_signal(signal.SIGCONT)
    codes, errs = [first.wait(), second.returncode], [first.communicate()[1], second.stderr]
    assert codes == [0, 2], (codes, errs)
    assert intact(out, 0)
    loser = errs[1].strip().splitlines()
    assert len(loser) == 1 and loser[0].startswith("spolab.data: run folder in use: "), loser
    assert f"{tmp_path}/run0 is being written by another process (pid " in loser[0]


def test_a_held_lock_names_its_pid_and_a_released_one_is_taken_over(tmp_path):
    """The lock held by another live process (this test's) refuses the run; once released (as a dead
    holder's is) the next run takes it over, whatever pid the file still names."""
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".spolab.lock"
    with open(lock, "w") as f:
        f.write(f"{os.getpid()}\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = subprocess.run(data_cmd(out, 0), cwd=tmp_path, env=ONE_THREAD, capture_output=True, text=True)
        line = one_line(res, "spolab.data: run folder in use: ")
        assert f"(pid {os.getpid()}: " in line
        assert sorted(p.name for p in out.iterdir()) == [".spolab.lock"]  # nothing written
    lock.write_text("999999999\n")  # a dead holder: its flock went with it
    res = subprocess.run(data_cmd(out, 0), cwd=tmp_path, env=ONE_THREAD, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert intact(out, 0)


@pytest.mark.slow
def test_twenty_trials_of_two_writers(tmp_path):
    results = [two_writers(tmp_path, trial) for trial in range(20)]
    corrupted = [(i, codes) for i, (ok, codes, _) in enumerate(results) if not ok]
    print(f"two simultaneous writers, 20 trials: {len(corrupted)} corrupted folders")
    assert corrupted == []


# ------------------------------------------------------------------------------------------ snakemake's lock


def test_lockcheck_against_a_live_snakemake(tmp_path):
    """A real snakemake holding its lock (a rule that sleeps): lockcheck says it is live (exit 2); once
    that snakemake is killed (its lock left stale), lockcheck says unlocking is safe (exit 0)."""
    (tmp_path / "Snakefile").write_text('rule all:\n    output: "done.txt"\n    shell: "sleep 120 && touch {output}"\n')
    snakemake = Path(sys.executable).parent / "snakemake"
    proc = subprocess.Popen([str(snakemake), "--cores", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        locks = tmp_path / ".snakemake" / "locks"
        while not (locks.is_dir() and any(locks.iterdir())):
            assert proc.poll() is None, "snakemake ended before it locked"
            time.sleep(0.2)
        check = [sys.executable, "-m", "spolab.lockcheck", str(tmp_path)]
        res = subprocess.run(check, capture_output=True, text=True)
        assert res.returncode == 2, res.stdout + res.stderr
        assert res.stderr.startswith("spolab.lockcheck: a run is live, don't unlock") and f"pid {proc.pid}" in res.stderr
        res = subprocess.run(check, capture_output=True, text=True, cwd=tmp_path.parent)
        assert res.returncode == 2  # the directory given, not the caller's
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the snakemake started here and its sleep: the lock stays, stale
        proc.wait()
    assert any(locks.iterdir())
    res = subprocess.run(check, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("spolab.lockcheck: stale lock:"), res.stdout + res.stderr
    res = subprocess.run([str(snakemake), "--unlock", "--cores", "1"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0
    res = subprocess.run(check, capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0 and "nothing to unlock" in res.stdout
