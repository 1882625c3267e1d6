# The exact-optimum testbed: SPO (squared, bce) and PPO against closed-form π*.
rule exact:
    input:
        mlflow=rules.mlflow_init.output.flag,
    output:
        f"{PATHS.exact}/ppo/summary.json",
        f"{PATHS.exact}/spo_squared/summary.json",
        f"{PATHS.exact}/spo_bce/summary.json",
    log:
        f"{PATHS.logs}/exact.log",
    benchmark:
        f"{PATHS.benchmarks}/exact.tsv"
    threads: 1
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("exact"),
        args=f"out_dir={PATHS.exact}",
    shell:
        hydra_cmd("exact")
