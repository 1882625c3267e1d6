# Held-out evaluation: n samples per problem, execution, pass@k and diversity.
rule eval_sft:
    input:
        model=rules.sft.output.model,
        mlflow=rules.mlflow_init.output.flag,
    output:
        f"{ROOT}/eval/sft/{{split}}-{{protocol}}/eval.json",
    log:
        f"{ROOT}/logs/eval_sft_{{split}}_{{protocol}}.log",
    benchmark:
        f"{ROOT}/benchmarks/eval_sft_{{split}}_{{protocol}}.tsv"
    threads: 1
    conda:
        ENV
    params:
        py=sys.executable,
        scale=SCALE,
        args=lambda w: (
            f"name=sft split={w.split} protocol={w.protocol} data_dir={ROOT}/data "
            f"model_dir={ROOT}/sft/model out_dir={ROOT}/eval/sft/{w.split}-{w.protocol}"
        ),
    shell:
        hydra_cmd("evaluate")


rule eval_all:
    input:
        expand(
            f"{ROOT}/eval/sft/{{split}}-{{protocol}}/eval.json",
            split=config["eval_splits"],
            protocol=config["eval_protocols"],
        ),
