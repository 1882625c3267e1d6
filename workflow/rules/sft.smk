# Supervised initialisation: the policy every RL run starts from, and π_ref.
rule sft:
    input:
        meta=rules.data.output.meta,
        mlflow=rules.mlflow_init.output.flag,
    output:
        summary=f"{ROOT}/sft/summary.json",
        model=f"{ROOT}/sft/model/config.json",
    log:
        f"{ROOT}/logs/sft.log",
    benchmark:
        f"{ROOT}/benchmarks/sft.tsv"
    threads: workflow.cores
    resources:
        gpu=gpus("sft"),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("sft"),
        args=f"data_dir={ROOT}/data out_dir={ROOT}/sft",
    shell:
        hydra_cmd("sft")
