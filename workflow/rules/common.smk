# Shared definitions: the interpreter that runs the Hydra entry points, output roots, the study matrix.
import os
import shlex
import sys
from pathlib import Path

import functools

from omegaconf import OmegaConf
from spolab.config import load_config
from spolab.config import run_identity
from spolab.dist import ENTRIES as DATA_PARALLEL
from spolab.paths import paths
from spolab.plan import check_scale, forwarded
from spolab.rollout.offpolicy import POOL_SOURCES
from spolab.study import entries, load_study, parse_run_name
from spolab.tracking import db_stamp, tracking_settings

SCALE = config["scale"]
# --config overrides="...": Hydra overrides for every job whose entry point has the key (spolab.plan.forwarded),
# after the rule's and the study entry's own (a scale with changes: docs/workflow.md)
OVERRIDES = shlex.split(config.get("overrides") or "")

# The threads of the rules that take every core (sft, bench): this machine's, which Snakemake scales down to
# --cores when it runs the jobs itself. Not workflow.cores: an executor (SLURM) runs without --cores, and its
# profile sets these rules' threads (workflow/profiles/slurm, set-threads).
ALL_CORES = os.cpu_count() or 1
# Every output of the DAG at this scale lives under results/<scale>/ (git-ignored), the report's too:
# results/<scale>/{export,figures,tables,bench}/ and results/<scale>/README.md. No rule but `publish`
# (publish.smk) writes a committed path, so on a fresh clone nothing committed shadows a DAG output.
# PATHS.<name>: each step's folder, as the entry configs' ${path:<name>} (spolab.paths: the one definition).
PATHS = paths(SCALE)
ROOT = PATHS.root
STUDY = config["study"]
# The study's own outputs (export, figures, tables, README): the default study's at results/<scale>/,
# another study's at results/<scale>/study_<study>/. Runs (rl/, eval/) are shared by name: a study that
# reuses an entry of another (same name, same config) reuses its run.
REPORT = ROOT if STUDY == "default" else f"{ROOT}/study_{STUDY}"
EXPORT = f"{REPORT}/export"  # the tidy CSVs (results/<scale>/data is the task data)
PUBLISH = config["publish"] == SCALE  # this scale's report is copied to the committed paths
ENV = "../../environment.yml"  # software of every rule (with --software-deployment-method conda)
ANALYSIS = Path(workflow.basedir) / "analysis"
# Jobs run `python` = the interpreter running Snakemake (the project's venv), and analysis scripts from
# $SPOLAB_ANALYSIS. Both travel in the environment, not in params or the shell text: neither is a rerun
# trigger, so `snakemake` and `python -m snakemake`, or a clone at another path, see the same DAG state.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ["SPOLAB_ANALYSIS"] = str(ANALYSIS)


envvars:
    "PATH",  # asserted, and passed on to jobs on other machines (executors)
    "SPOLAB_ANALYSIS",


SPECS = load_study(config["study"], SCALE)  # spolab.study: the one reader of conf/study/<study>.yaml
RUNS = entries(SPECS)  # study entry -> its RunSpec
RUN_IDS = [s.name for s in SPECS]
SWEEP_ONLY = all(s.group == "sweep" for s in SPECS)  # an lr sweep (conf/study/lr_sweep.yaml): its table only
TRACKING = tracking_settings(SCALE)  # conf/tracking: the MLflow database and experiment of this scale
# The memory plan (spolab.plan): a scale with gpu_memory_gb is refused here, before its first job, when any
# model entry point needs more per device (one line: the entry, its GiB, the budget, the biggest items); each
# job's start-up validation checks its own config again. A scale without gpu_memory_gb is not planned.
check_scale(SCALE, OVERRIDES)

def extra(entry):
    """The --config overrides that reach entry point `entry` (a list of Hydra overrides)."""
    return forwarded(OVERRIDES, entry)


ENTRY_POINTS = set()  # the spolab entry points the rules run (hydra_cmd records each)


def check_overrides():
    """Refuse --config overrides that reach no entry point the rules run (a typo would be silently dropped);
    called by the Snakefile once every rule file is read."""
    unused = [o for o in OVERRIDES if not any(forwarded([o], e) for e in sorted(ENTRY_POINTS))]
    if unused:
        raise ValueError(f"--config overrides: {unused} reach no entry point of the DAG (no conf/<entry>.yaml has "
                         "the key, or the rules set it: scale=, algo=, out_dir=, ref_model_dir=)")


def hydra_cmd(module):
    """`python -m spolab.<module>` with the job's thread count, the scale and the rule's params.args; an
    entry that runs data-parallel at a scale with `scale.world_size` W > 1 (`world_size`) is launched as W
    processes on this node by `torchrun --standalone --nproc_per_node=W -m spolab.<module>`, each with
    threads / W of the job's threads (at least 1); at W = 1 too when the scale sets `scale.launcher: torchrun`
    (one process under the launcher, as gpu_check checks it).

    `python` and `torchrun` are the interpreter running Snakemake and its venv's launcher (PATH, set above).
    """
    ENTRY_POINTS.add(module)
    n = world_size(module)
    if n == 1 and not (module in DATA_PARALLEL and resolved(module)["scale"].get("launcher") == "torchrun"):
        threads = "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}"
        launcher = "python -m"
    else:
        per = f"$(( {{threads}} > {n} ? {{threads}} / {n} : 1 ))"
        threads = f"OMP_NUM_THREADS={per} MKL_NUM_THREADS={per}"
        launcher = f"torchrun --standalone --nproc_per_node={n} -m"
    more = "".join(f" {shlex.quote(o)}" for o in extra(module)).replace("{", "{{").replace("}", "}}")
    return f"{threads} {launcher} spolab.{module} scale={{params.scale}} {{params.args}}{more} > {{log}} 2>&1"


def world_size(entry):
    """Processes one job of this entry runs across: the scale's `scale.world_size` for an entry that runs
    data-parallel under torchrun (spolab.dist.ENTRIES: rl, sft, q0, sources, evaluate), else 1 (bench and the
    CPU-only steps run in one process)."""
    return int(resolved(entry)["scale"].get("world_size") or 1) if entry in DATA_PARALLEL else 1


@functools.cache
def resolved(entry, overrides=""):
    """conf/<entry>.yaml composed at this scale with a study entry's overrides and the --config overrides that
    reach it, resolved (a dict)."""
    return OmegaConf.to_container(load_config(entry, [f"scale={SCALE}", *overrides.split(), *extra(entry)]),
                                  resolve=True)


def conf_hash(entry, overrides=""):
    """The run identity of the resolved config (spolab.config.run_identity: its hash, tracking settings
    excluded). Every rule that runs an entry point carries it as `params.conf`, so editing anything under
    conf/ reruns exactly the jobs whose resolved configuration changed."""
    return run_identity(resolved(entry, overrides))


def scale_task():
    """The scale's task, once: (the splits it builds, whether it writes its own tokenizer, whether it
    enumerates its correct programs). The first two are the data rule's outputs: listdsl builds
    sft/rl/val/test/ood and a word-level tokenizer; HumanEval rl/val/test and no tokenizer (a real model
    brings its own). The third decides the `exact` protocol (protocols_of): the list DSL enumerates, the
    code benchmarks do not."""
    from spolab.tasks.base import task_class, task_splits

    task = resolved("data")["task"]
    cls = task_class(task["name"])
    return task_splits(task), cls.builds_tokenizer, cls.enumerates_solutions


TASK_SPLITS, TASK_TOKENIZER, TASK_ENUMERATES = scale_task()


def eval_splits():
    """workflow/config.yaml's eval_splits that the scale's task builds (HumanEval has no ood split)."""
    return [s for s in config["eval_splits"] if s in TASK_SPLITS]


def gpus(entry, overrides=""):
    """GPUs one job of this entry requests (Snakemake's `gpu` resource) when its resolved `device` is cuda
    (a GPU scale sets `device: cuda`, conf/scale/paper.yaml): one per process (`world_size`: W for a
    data-parallel job, else 1); 0 for cpu and for auto, which cannot know at DAG time where a job will
    land. The SLURM executor turns `gpu=N` into a request for N GPUs (workflow/profiles/slurm); locally,
    `snakemake --resources gpu=<GPUs>` bounds the GPUs the jobs running at once hold."""
    return world_size(entry) if str(resolved(entry, overrides).get("device", "cpu")).startswith("cuda") else 0


def bench_device():
    """What the bench's output files are named after (spolab.bench writes bench_<device type>.*)."""
    return "cuda" if gpus("bench") else "cpu"


def sampled_splits():
    """The eval splits the sampling protocols run on: workflow/config.yaml's eval_sampled_splits where the
    task enumerates its solutions (every split keeps the exact protocol), else every eval split (without
    an exact protocol a split left unsampled would not be evaluated at all)."""
    if not TASK_ENUMERATES:
        return EVAL_SPLITS
    return [s for s in EVAL_SPLITS if s in config["eval_sampled_splits"]]


SCALE_PROTOCOLS = list(resolved("evaluate")["protocols"])  # the sampling protocols this scale evaluates under
BENCH_DEVICE = bench_device()
EVAL_SPLITS = eval_splits()
SAMPLED_SPLITS = sampled_splits()


def model_of(w):
    """The checkpoint an eval job scores: the SFT model, or an RL run's final model."""
    return f"{PATHS.sft_model}/config.json" if w.name == "sft" else f"{PATHS.rl}/{w.name}/model/config.json"


def eval_inputs(w):
    """An eval job reads its model; an RL run's also reads the SFT evaluation's exact_logprobs.jsonl (π_ref's
    log-probs of the enumerated programs: the SFT policy is π_ref), which its params pass on."""
    inputs = {"model": model_of(w), "mlflow": rules.mlflow_init.output.flag}
    if w.name != "sft":
        inputs["ref_logprobs"] = f"{PATHS.eval}/sft/exact_logprobs.jsonl"
    return inputs


def eval_args(w, input):
    """The evaluate overrides of one eval job (eval_inputs: its inputs)."""
    args = (
        f"name={w.name} splits=[{','.join(EVAL_SPLITS)}] sampled_splits=[{','.join(SAMPLED_SPLITS)}] "
        f"protocols=[{','.join(protocols_of(w.name))}] data_dir={PATHS.data} "
        f"model_dir={Path(input.model).parent} ref_model_dir={PATHS.sft_model} out_dir={PATHS.eval}/{w.name}"
    )
    return args + (f" exact_mass.ref_logprobs={input.ref_logprobs}" if w.name != "sft" else "")



def protocols_of(name):
    """Evaluation protocols of a model, in workflow/config.yaml's order, among the scale's own (evaluate's
    `protocols` at this scale, plus `exact`): every configured one for SFT; for an RL run its study entry's
    `protocols` and `exact` (no sampling: pass@k from the exact success mass, which every comparison of the
    study can read). Where the task cannot enumerate its solutions, `exact` is replaced by the scale's first
    sampling protocol (real_smoke evaluates under `paper` only: conf/scale/real_smoke.yaml)."""
    wanted = set(config["eval_protocols"]) if name == "sft" else {*RUNS[parse_run_name(name)[0]].protocols, "exact"}
    if not TASK_ENUMERATES and "exact" in wanted:
        wanted = (wanted - {"exact"}) | {SCALE_PROTOCOLS[0]}
    return [p for p in config["eval_protocols"] if p in wanted and p in {*SCALE_PROTOCOLS, "exact"}] or SCALE_PROTOCOLS[:1]


def rl_inputs(w):
    """An RL run reads the SFT model, Q̂0 when its algorithm needs it (SPO: Algorithm.needs_q0; PPO,
    GRPO and RLOO start while Q̂0 is still being sampled), the pools its data mix draws from, and the
    dumps of the study runs it `needs` (earlier_run: the PPO run of the same seed)."""
    from spolab.algos import get_algorithm

    spec = RUNS[w.run]
    cfg = resolved("rl", spec.overrides)
    sources = cfg["data_mix"]["sources"] or {}
    inputs = {"model": rules.sft.output.model, "mlflow": rules.mlflow_init.output.flag}
    if get_algorithm(cfg["algo"]["name"]).needs_q0:
        inputs["q0"] = rules.q0.output.q0
    if set(sources) & set(POOL_SOURCES):
        inputs["pools"] = rules.sources.output.summary
    for i, other in enumerate(spec.needs):
        inputs[f"needs{i}"] = f"{PATHS.rl}/{other}-s{w.seed}/trajectories.jsonl"
    return inputs
