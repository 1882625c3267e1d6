# Q̂0 and the stored off-policy pools once per SFT model, then one node per RL run and seed of the
# study matrix (conf/study/<study>.yaml).
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
    resources:
        gpu=gpus("q0"),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("q0"),
        args=f"data_dir={ROOT}/data sft_dir={ROOT}/sft/model out_dir={ROOT}/q0",
    shell:
        hydra_cmd("q0")


rule sources:
    input:
        model=rules.sft.output.model,
        mlflow=rules.mlflow_init.output.flag,
    output:
        pools=expand(f"{ROOT}/sources/{{source}}.jsonl", source=POOL_SOURCES),
        summary=f"{ROOT}/sources/summary.json",
    log:
        f"{ROOT}/logs/sources.log",
    benchmark:
        f"{ROOT}/benchmarks/sources.tsv"
    threads: 1
    resources:
        gpu=gpus("sources"),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("sources"),
        args=f"data_dir={ROOT}/data sft_dir={ROOT}/sft/model out_dir={ROOT}/sources",
    shell:
        hydra_cmd("sources")


rule rl:
    input:
        unpack(rl_inputs),
    output:
        summary=f"{ROOT}/rl/{{run}}-s{{seed}}/summary.json",
        model=f"{ROOT}/rl/{{run}}-s{{seed}}/model/config.json",
        trajectories=f"{ROOT}/rl/{{run}}-s{{seed}}/trajectories.jsonl",
    log:
        f"{ROOT}/logs/rl/{{run}}-s{{seed}}.log",
    benchmark:
        f"{ROOT}/benchmarks/rl/{{run}}-s{{seed}}.tsv"  # <rule>/<run name>: read_jobs (analysis/export.py)
    wildcard_constraints:
        seed=r"\d+",
    threads: 1
    resources:
        gpu=lambda w: gpus("rl", RUNS[w.run].overrides),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=lambda w: conf_hash("rl", RUNS[w.run].overrides),
        args=lambda w: (
            f"{RUNS[w.run].overrides} seed={w.seed} name={w.run}-s{w.seed} data_dir={ROOT}/data "
            f"sft_dir={ROOT}/sft/model q0_path={ROOT}/q0/q0.json sources_dir={ROOT}/sources "
            f"out_dir={ROOT}/rl/{w.run}-s{w.seed} study_run={w.run} study_group={RUNS[w.run].group}"
            + "".join(f" earlier_run_path={ROOT}/rl/{o}-s{w.seed}/trajectories.jsonl" for o in RUNS[w.run].needs)
        ),
    shell:
        hydra_cmd("rl")
