# Shared definitions: the interpreter that runs the Hydra entry points, and output roots.
import sys
from pathlib import Path

SCALE = config["scale"]
ROOT = f"results/{SCALE}"  # every run output of this scale lives here (git-ignored)
ENV = "../../environment.yml"  # software of every rule (with --software-deployment-method conda)


def hydra_cmd(module):
    """`python -m spolab.<module>` with the job's thread count, the scale and the rule's params.args.

    The interpreter is the one running Snakemake (the project's venv), passed as params.py.
    """
    threads = "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}"
    return f"{threads} {{params.py}} -m spolab.{module} scale={{params.scale}} {{params.args}} > {{log}} 2>&1"


def model_of(w):
    """The checkpoint an eval job scores: the SFT model, or an RL run's final model."""
    return f"{ROOT}/sft/model/config.json" if w.name == "sft" else f"{ROOT}/rl/{w.name}/model/config.json"
