# Q̂0 once per SFT model, then one node per RL run and seed of the study matrix (conf/study/<study>.yaml).
import yaml

STUDY = yaml.safe_load(open(Path(workflow.basedir) / "conf" / "study" / f"{config['study']}.yaml"))
RUNS = STUDY["runs"]
SEEDS = STUDY["seeds"][SCALE]
RUN_IDS = [f"{run}-s{seed}" for run in RUNS for seed in SEEDS]


rule q0:
    input:
        model=rules.sft.output.model,
        mlflow=rules.mlflow_init.output.flag,
    output:
        q0=f"{ROOT}/q0/q0.json",
        samples=f"{ROOT}/q0/ref_samples.jsonl",
    log:
        f"{ROOT}/logs/q0.log",
    benchmark:
        f"{ROOT}/benchmarks/q0.tsv"
    threads: workflow.cores
    conda:
        ENV
    params:
        py=sys.executable,
        scale=SCALE,
        args=f"data_dir={ROOT}/data sft_dir={ROOT}/sft/model out_dir={ROOT}/q0",
    shell:
        hydra_cmd("q0")


rule rl:
    input:
        model=rules.sft.output.model,
        q0=rules.q0.output.q0,
        mlflow=rules.mlflow_init.output.flag,
    output:
        summary=f"{ROOT}/rl/{{run}}-s{{seed}}/summary.json",
        model=f"{ROOT}/rl/{{run}}-s{{seed}}/model/config.json",
    log:
        f"{ROOT}/logs/rl_{{run}}_s{{seed}}.log",
    benchmark:
        f"{ROOT}/benchmarks/rl_{{run}}_s{{seed}}.tsv"
    wildcard_constraints:
        seed=r"\d+",
    threads: 1
    conda:
        ENV
    params:
        py=sys.executable,
        scale=SCALE,
        args=lambda w: (
            f"{RUNS[w.run]} seed={w.seed} name={w.run}-s{w.seed} data_dir={ROOT}/data "
            f"sft_dir={ROOT}/sft/model q0_path={ROOT}/q0/q0.json out_dir={ROOT}/rl/{w.run}-s{w.seed}"
        ),
    shell:
        hydra_cmd("rl")
