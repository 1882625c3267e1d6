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
