# Q̂0 and the stored off-policy pools once per SFT model, then one node per RL run and seed of the
# study matrix (conf/study/<study>.yaml).
rule q0:
    input:
        model=rules.sft.output.model,
        mlflow=rules.mlflow_init.output.flag,
    output:
        q0=PATHS.q0_file,
        samples=f"{PATHS.q0}/ref_samples.jsonl",
    log:
        f"{PATHS.logs}/q0.log",
    benchmark:
        f"{PATHS.benchmarks}/q0.tsv"
    threads: world_size("q0")  # one per process: beside it run the RL jobs that need no Q̂0 (rl_inputs); one
    # thread in one process, as the benchmark's step times that claim C4 adds Q̂0's time to
    resources:
        gpu=gpus("q0"),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("q0"),
        args=f"data_dir={PATHS.data} sft_dir={PATHS.sft_model} out_dir={PATHS.q0}",
    shell:
        hydra_cmd("q0")


rule sources:
    input:
        model=rules.sft.output.model,
        mlflow=rules.mlflow_init.output.flag,
    output:
        pools=expand(f"{PATHS.sources}/{{source}}.jsonl", source=POOL_SOURCES),
        summary=f"{PATHS.sources}/summary.json",
    log:
        f"{PATHS.logs}/sources.log",
    benchmark:
        f"{PATHS.benchmarks}/sources.tsv"
    threads: world_size("sources")  # one per process
    resources:
        gpu=gpus("sources"),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("sources"),
        args=f"data_dir={PATHS.data} sft_dir={PATHS.sft_model} out_dir={PATHS.sources}",
    shell:
        hydra_cmd("sources")


rule rl:
    input:
        unpack(rl_inputs),
    output:
        summary=f"{PATHS.rl}/{{run}}-s{{seed}}/summary.json",
        model=f"{PATHS.rl}/{{run}}-s{{seed}}/model/config.json",
        trajectories=f"{PATHS.rl}/{{run}}-s{{seed}}/trajectories.jsonl",
    log:
        f"{PATHS.logs}/rl/{{run}}-s{{seed}}.log",
    benchmark:
        f"{PATHS.benchmarks}/rl/{{run}}-s{{seed}}.tsv"  # <rule>/<run name>: read_jobs (analysis/export.py)
    wildcard_constraints:
        seed=r"\d+",
    threads: world_size("rl")  # one per process (hydra_cmd: torchrun when scale.world_size > 1)
    resources:
        gpu=lambda w: gpus("rl", RUNS[w.run].overrides),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=lambda w: conf_hash("rl", RUNS[w.run].overrides),
        args=lambda w: (
            f"{RUNS[w.run].overrides} seed={w.seed} name={w.run}-s{w.seed} data_dir={PATHS.data} "
            f"sft_dir={PATHS.sft_model} q0_path={PATHS.q0_file} sources_dir={PATHS.sources} "
            f"out_dir={PATHS.rl}/{w.run}-s{w.seed} study_run={w.run} study_group={RUNS[w.run].group}"
            + "".join(f" earlier_run_path={PATHS.rl}/{o}-s{w.seed}/trajectories.jsonl" for o in RUNS[w.run].needs)
        ),
    shell:
        hydra_cmd("rl")
