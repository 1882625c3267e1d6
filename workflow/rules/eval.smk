# Held-out evaluation of the SFT policy and of every RL run (one job per model): n samples per
# problem, execution, pass@k and diversity (KL to π_ref included), for every split of
# workflow/config.yaml and the protocols the study entry asks for (protocols_of).
rule eval:
    input:
        model=model_of,
        mlflow=rules.mlflow_init.output.flag,
    output:
        summary=f"{PATHS.eval}/{{name}}/summary.json",
    log:
        f"{PATHS.logs}/eval/{{name}}.log",
    benchmark:
        f"{PATHS.benchmarks}/eval/{{name}}.tsv"  # <rule>/<job>: read_jobs (analysis/export.py)
    threads: 1
    resources:
        gpu=gpus("evaluate"),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("evaluate"),
        args=lambda w, input: (
            f"name={w.name} splits=[{','.join(EVAL_SPLITS)}] "
            f"protocols=[{','.join(protocols_of(w.name))}] data_dir={PATHS.data} "
            f"model_dir={Path(input.model).parent} ref_model_dir={PATHS.sft_model} out_dir={PATHS.eval}/{w.name}"
        ),
    shell:
        hydra_cmd("evaluate")


rule eval_all:
    input:
        expand(f"{PATHS.eval}/{{name}}/summary.json", name=["sft"] + RUN_IDS),
