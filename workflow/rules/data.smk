# The task dataset: splits (sft, rl, val, test, ood) and the tokenizer.
SPLITS = ["sft", "rl", "val", "test", "ood"]


rule data:
    output:
        meta=f"{ROOT}/data/meta.json",
        splits=expand(f"{ROOT}/data/{{split}}.jsonl", split=SPLITS),
        tokenizer=f"{ROOT}/data/tokenizer/tokenizer.json",
    log:
        f"{ROOT}/logs/data.log",
    benchmark:
        f"{ROOT}/benchmarks/data.tsv"
    threads: 1
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("data"),
        args=f"out_dir={ROOT}/data",
    shell:
        hydra_cmd("data")
