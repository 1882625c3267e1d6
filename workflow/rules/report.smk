# Tables and benchmarks of the default study (committed under results/), or under results/<scale>/.
TABLES = "results/tables" if SCALE == "default" else f"{ROOT}/tables"


rule eval_table:
    input:
        rules.eval_all.input,
    output:
        f"{TABLES}/eval_{SCALE}.md",
    log:
        f"{ROOT}/logs/eval_table.log",
    threads: 1
    conda:
        ENV
    params:
        py=sys.executable,
        scale=SCALE,
        script=Path(workflow.basedir) / "analysis" / "eval_table.py",
    shell:
        "{params.py} {params.script} --scale {params.scale} --out {output} > {log} 2>&1"


rule bench:
    input:
        model=rules.sft.output.model,
    output:
        f"results/bench/{SCALE}/bench_cpu.md",
    log:
        f"{ROOT}/logs/bench.log",
    benchmark:
        f"{ROOT}/benchmarks/bench.tsv"
    threads: workflow.cores  # alone on the machine: timings are only comparable without neighbours
    conda:
        ENV
    params:
        py=sys.executable,
        scale=SCALE,
        args=f"sft_dir={ROOT}/sft/model data_dir={ROOT}/data",
    shell:
        hydra_cmd("bench")
