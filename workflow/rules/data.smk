# The task dataset: its splits (listdsl: sft, rl, val, test, ood; humaneval: rl, val, test) and, for a
# task with its own vocabulary, the tokenizer (common.smk: scale_task).
rule data:
    output:
        meta=f"{PATHS.data}/meta.json",
        splits=expand(f"{PATHS.data}/{{split}}.jsonl", split=TASK_SPLITS),
        tokenizer=[f"{PATHS.data}/tokenizer/tokenizer.json"] if TASK_TOKENIZER else [],
    log:
        f"{PATHS.logs}/data.log",
    benchmark:
        f"{PATHS.benchmarks}/data.tsv"
    threads: 1
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("data"),
        args=f"out_dir={PATHS.data}",
    shell:
        hydra_cmd("data")
