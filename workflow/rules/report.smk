# From MLflow to every figure, table and the claims report, all under results/<scale>/: export reads
# the study's runs from MLflow into tidy CSVs (export/); one rule per figure (figures/); report writes
# README.md beside figures/ and tables/ (its image links are relative: figures/<f>.png). The published
# scale's copies under results/ are rule publish's (publish.smk). Figures and tables are marked with
# report(): `snakemake --report results/report.html` bundles them, each with its caption from
# workflow/report/<name>.rst.
report: "../report/workflow.rst"


FIGURES = {  # figure -> the report's subcategory (what it is about)
    "f1_pass_vs_fresh": "main comparison",
    "f2_pass_at_k": "main comparison",
    "f3_diversity": "main comparison",
    "f4_offpolicy": "off-policy data",
    "f5_cost": "cost",
    "f6_stability": "stability",
    "f7_exact": "exact testbed",
    "f8_ablations": "SPO ablations",
    "f9_frontier": "main comparison",
}
CSVS = ["runs", "curves", "eval", "eval_per_problem", "exact", "bench", "jobs", "study", "setup"]  # analysis/export.py


rule eval_table:
    input:
        f"{EXPORT}/eval.csv",
    output:
        report(f"{REPORT}/tables/eval_{SCALE}.md", caption="../report/eval_table.rst", category="Tables"),
    log:
        f"{REPORT}/logs/eval_table.log",
    threads: 1
    conda:
        ENV
    params:
        script="$SPOLAB_ANALYSIS/eval_table.py",
        data=lambda w, input: Path(input[0]).parent,
    shell:
        "python \"{params.script}\" --data {params.data} --out {output} > {log} 2>&1"


rule bench:
    input:
        model=rules.sft.output.model,
    output:
        f"{PATHS.bench}/bench_{BENCH_DEVICE}.md",
        csv=f"{PATHS.bench}/bench_{BENCH_DEVICE}.csv",
        sampler=f"{PATHS.bench}/sampler_{BENCH_DEVICE}.csv",
    log:
        f"{PATHS.logs}/bench.log",
    benchmark:
        f"{PATHS.benchmarks}/bench.tsv"
    threads: ALL_CORES  # alone on the machine: timings are only comparable without neighbours
    resources:
        gpu=gpus("bench"),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("bench"),
        args=f"sft_dir={PATHS.sft_model} data_dir={PATHS.data} out_dir={PATHS.bench}",
    shell:
        hydra_cmd("bench")


rule export:
    input:
        evals=rules.eval_all.input,
        runs=expand(f"{PATHS.rl}/{{id}}/summary.json", id=RUN_IDS),
        exact=rules.exact_all.input,
        bench=rules.bench.output.csv,
        sources=rules.sources.output.summary,
        mlflow=rules.mlflow_mirror.output.flag,  # MLflow holds every run folder (mlflow.smk)
    output:
        # update(): Snakemake keeps the previous CSVs while the export runs and restores them if it fails
        # (analysis/export.py swaps the whole folder in only once every CSV is written)
        update(expand(f"{EXPORT}/{{csv}}.csv", csv=CSVS)),
    log:
        f"{REPORT}/logs/export.log",
    benchmark:
        f"{REPORT}/benchmarks/export.tsv"
    threads: 1
    conda:
        ENV
    params:
        script="$SPOLAB_ANALYSIS/export.py",
        study=config["study"],
        scale=SCALE,
        out=lambda w, output: Path(output[0]).parent,
    shell:
        "python \"{params.script}\" --scale {params.scale} --study {params.study} --bench {input.bench} "
        "--out {params.out} > {log} 2>&1"


for _fig in FIGURES:

    rule:
        name:
            f"figure_{_fig}"
        input:
            rules.export.output,
        output:
            report(
                f"{REPORT}/figures/{_fig}.png",
                caption=f"../report/{_fig}.rst",
                category="Figures",
                subcategory=FIGURES[_fig],
            ),
        log:
            f"{REPORT}/logs/figure_{_fig}.log",
        threads: 1
        conda:
            ENV
        params:
            script=f"$SPOLAB_ANALYSIS/{_fig}.py",
            data=lambda w, input: Path(input[0]).parent,
        shell:
            "python \"{params.script}\" --data {params.data} --out {output} > {log} 2>&1"


rule report:
    input:
        csvs=rules.export.output,
        figures=expand(f"{REPORT}/figures/{{fig}}.png", fig=FIGURES),
        table=rules.eval_table.output,
    output:
        readme=report(f"{REPORT}/README.md", caption="../report/readme.rst", category="Claims"),
        claims=report(f"{REPORT}/tables/claims_{SCALE}.md", caption="../report/claims.rst", category="Claims"),
    log:
        f"{REPORT}/logs/report.log",
    threads: 1
    conda:
        ENV
    params:
        script="$SPOLAB_ANALYSIS/report.py",
        study=config["study"],
        scale=SCALE,
        data=lambda w, input: Path(input.csvs[0]).parent,
        figures=lambda w, input: Path(input.figures[0]).parent,
    shell:
        "python \"{params.script}\" --scale {params.scale} --study {params.study} --data {params.data} "
        "--figures {params.figures} --out {output.readme} --claims {output.claims} > {log} 2>&1"


rule lr_table:
    """The lr sweep's table and the rule's choice per algorithm (analysis/lr_sweep.py; study=lr_sweep)."""
    input:
        runs=expand(f"{PATHS.rl}/{{id}}/summary.json", id=RUN_IDS),
    output:
        table=report(f"{REPORT}/tables/lr_sweep_{SCALE}.md", caption="../report/lr_sweep.rst", category="Tables"),
        csv=f"{REPORT}/tables/lr_sweep_{SCALE}.csv",
    log:
        f"{REPORT}/logs/lr_table.log",
    threads: 1
    conda:
        ENV
    params:
        script="$SPOLAB_ANALYSIS/lr_sweep.py",
        study=STUDY,
        scale=SCALE,
    shell:
        "python \"{params.script}\" --scale {params.scale} --study {params.study} --out {output.table} > {log} 2>&1"
