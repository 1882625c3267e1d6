# Create the MLflow database and experiment once, before any parallel job can race on it.
rule mlflow_init:
    output:
        flag=f"{ROOT}/.mlflow_ready",
    log:
        f"{ROOT}/logs/mlflow_init.log",
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
# their folder) and writes MIRROR_FLAG, naming the database file it checked (spolab.tracking.db_stamp:
# its device and inode). The database is shared by every scale and written by every job, so it is no
# rule's output (a rule would delete it before rerunning); instead, when the database is gone or is
# another file than the one the flag names (deleted, then recreated empty by a later job), the flag is
# removed here, while the DAG is built: mlflow_mirror and the export rerun, and nothing upstream does
# (the training rules read mlflow_init's flag, which stays). After `rm results/mlflow.db`, a plain
# `snakemake` rebuilds it and re-exports without retraining.
MIRROR_FLAG = f"{ROOT}/.mlflow_mirror"
if Path(MIRROR_FLAG).exists() and Path(MIRROR_FLAG).read_text().strip() != str(db_stamp(TRACKING["uri"])):
    Path(MIRROR_FLAG).unlink()  # the database it checked is gone: mirror (and export) again


rule mlflow_mirror:
    input:
        ancient(rules.mlflow_init.output.flag),
        # every run folder's DAG output at this scale: the mirror is checked once they are all written
        lambda w: [rules.sft.output.summary, rules.q0.output.q0, rules.sources.output.summary,
                   *expand(f"{ROOT}/rl/{{id}}/summary.json", id=RUN_IDS), *rules.eval_all.input, *rules.exact.output],
    output:
        flag=MIRROR_FLAG,
    log:
        f"{ROOT}/logs/mlflow_mirror.log",
    threads: 1
    conda:
        ENV
    params:
        uri=TRACKING["uri"],
        root=lambda w, output: Path(output.flag).parent,  # results/<scale>: every run folder of the scale
    shell:
        "python -m spolab.tracking rebuild {params.root} --uri {params.uri} --stamp {output.flag} > {log} 2>&1"
