# Held-out evaluation of the SFT policy and of every RL run: n samples per problem, execution,
# pass@k and diversity (KL to π_ref included), for every split and protocol of workflow/config.yaml.
rule eval:
    input:
        model=model_of,
        mlflow=rules.mlflow_init.output.flag,
    output:
        expand(
            f"{ROOT}/eval/{{{{name}}}}/{{split}}-{{protocol}}/eval.json",
            split=config["eval_splits"],
            protocol=config["eval_protocols"],
        ),
    log:
        f"{ROOT}/logs/eval_{{name}}.log",
    benchmark:
        f"{ROOT}/benchmarks/eval_{{name}}.tsv"
    threads: 1
    conda:
        ENV
    params:
        py=sys.executable,
        scale=SCALE,
        args=lambda w, input: (
            f"name={w.name} splits=[{','.join(config['eval_splits'])}] "
            f"protocols=[{','.join(config['eval_protocols'])}] data_dir={ROOT}/data "
            f"model_dir={Path(input.model).parent} ref_model_dir={ROOT}/sft/model out_dir={ROOT}/eval/{w.name}"
        ),
    shell:
        hydra_cmd("evaluate")


rule eval_all:
    input:
        expand(
            f"{ROOT}/eval/{{name}}/{{split}}-{{protocol}}/eval.json",
            name=["sft"] + RUN_IDS,
            split=config["eval_splits"],
            protocol=config["eval_protocols"],
        ),
