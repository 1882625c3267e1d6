# Supervised initialisation: the policy every RL run starts from, and π_ref.
rule sft:
    input:
        meta=rules.data.output.meta,
        mlflow=rules.mlflow_init.output.flag,
    output:
        summary=f"{PATHS.sft}/summary.json",
        model=f"{PATHS.sft_model}/config.json",
    log:
        f"{PATHS.logs}/sft.log",
    benchmark:
        f"{PATHS.benchmarks}/sft.tsv"
    threads: ALL_CORES  # every core of a local run (an executor: the profile's set-threads)
    resources:
        gpu=gpus("sft"),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("sft"),
        args=f"data_dir={PATHS.data} out_dir={PATHS.sft}",
    shell:
        hydra_cmd("sft")
