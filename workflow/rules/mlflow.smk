# Create the MLflow database and experiment once, before any parallel job can race on it.
rule mlflow_init:
    output:
        flag=f"{ROOT}/.mlflow_ready",
    log:
        f"{PATHS.logs}/mlflow_init.log",
    threads: 1
    conda:
        ENV
    params:
        uri=TRACKING["uri"],
        experiment=TRACKING["experiment"],
        artifact_root=TRACKING["artifact_root"],
    shell:
        "python -m spolab.tracking init --uri {params.uri} --experiment {params.experiment} "
        "--artifact-root {params.artifact_root} > {log} 2>&1 && touch {output.flag}"


# MLflow mirrors the run folders (config.yaml, metrics.jsonl, tracking.json are the record). Before the
# export reads MLflow, mlflow_mirror makes sure the database holds every run folder of this scale: it
# rebuilds whatever is missing (`python -m spolab.tracking rebuild`, which keeps runs that already mirror
# their folder). The database is shared by every scale and written by every job, so it is no rule's
# output (a rule would delete it before rerunning). DB_STAMP names the database file the mirror last
# checked (spolab.tracking.db_stamp: its device and inode); when the database is gone or is another file
# (deleted, then recreated empty by a later job), DB_STAMP is rewritten here, while the DAG is built, so
# it is newer than the mirror's flag: mlflow_mirror and the export rerun, and nothing upstream does (the
# training rules read mlflow_init's flag, which stays). After `rm results/mlflow.db`, a plain `snakemake`
# rebuilds it and re-exports without retraining.
DB_STAMP = Path(f"{ROOT}/.mlflow_db")
_stamp = f"{db_stamp(TRACKING['uri'])}\n"
if not DB_STAMP.exists() or DB_STAMP.read_text() != _stamp:
    DB_STAMP.parent.mkdir(parents=True, exist_ok=True)
    DB_STAMP.write_text(_stamp)


rule mlflow_mirror:
    input:
        ancient(rules.mlflow_init.output.flag),
        # every run folder's DAG output at this scale: the mirror is checked once they are all written
        lambda w: [rules.sft.output.summary, rules.q0.output.q0, rules.sources.output.summary,
                   *expand(f"{PATHS.rl}/{{id}}/summary.json", id=RUN_IDS), *rules.eval_all.input, *rules.exact_all.input],
        stamp=str(DB_STAMP),
    output:
        flag=f"{ROOT}/.mlflow_mirror",
    log:
        f"{PATHS.logs}/mlflow_mirror.log",
    threads: 1
    conda:
        ENV
    params:
        uri=TRACKING["uri"],
        root=lambda w, output: Path(output.flag).parent,  # results/<scale>: every run folder of the scale
    shell:
        # the stamp is rewritten (the rebuilt database's) before the flag is touched: the flag stays newer
        "python -m spolab.tracking rebuild {params.root} --uri {params.uri} --stamp {input.stamp} > {log} 2>&1 "
        "&& touch {output.flag}"
