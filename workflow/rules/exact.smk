# The exact-optimum testbed: SPO (squared, bce) and PPO against closed-form π*.
rule exact:
    input:
        mlflow=rules.mlflow_init.output.flag,
    output:
        f"{ROOT}/exact/ppo/summary.json",
        f"{ROOT}/exact/spo_squared/summary.json",
        f"{ROOT}/exact/spo_bce/summary.json",
    log:
        f"{ROOT}/logs/exact.log",
    benchmark:
        f"{ROOT}/benchmarks/exact.tsv"
    threads: 1
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("exact"),
        args=f"out_dir={ROOT}/exact",
    shell:
        hydra_cmd("exact")
