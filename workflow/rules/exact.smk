# The exact-optimum testbed: SPO (squared, bce) and PPO against closed-form π*, one job per β of
# conf/exact.yaml's `betas` (the main comparison's β and a larger one).
EXACT_BETAS = [f"{b:g}" for b in resolved("exact")["betas"]]
EXACT_ALGOS = resolved("exact")["algos"]


rule exact:
    input:
        mlflow=rules.mlflow_init.output.flag,
    output:
        [f"{PATHS.exact}/beta{{beta}}/{algo}/summary.json" for algo in EXACT_ALGOS],
    log:
        f"{PATHS.logs}/exact_beta{{beta}}.log",
    benchmark:
        f"{PATHS.benchmarks}/exact_beta{{beta}}.tsv"
    wildcard_constraints:
        beta="[0-9.e-]+",
    threads: 1
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("exact"),
        args=f"exact.beta={{beta}} out_dir={PATHS.exact}/beta{{beta}}",
    shell:
        hydra_cmd("exact")


rule exact_all:
    input:
        expand(f"{PATHS.exact}/beta{{beta}}/{{algo}}/summary.json", beta=EXACT_BETAS, algo=EXACT_ALGOS),
