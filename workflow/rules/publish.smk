# Publish: copy the report of the published scale (config `publish`, default: the default scale) from
# results/<scale>/ to the committed paths under results/: README.md, figures/, tables/, data/ (the
# export's CSVs) and bench/<scale>/. Only that scale has this rule, and `rule all` targets it there
# (`report` at every other scale). No other rule writes a committed path: a fresh clone reruns the study.
# The README's links are relative (figures/<f>.png), so they hold at results/<scale>/ and here.
if STUDY == "default":
    PUBLISHED = {  # committed path -> the DAG output it is a copy of
        "results/README.md": rules.report.output.readme,
        **{f"results/figures/{fig}.png": f"{REPORT}/figures/{fig}.png" for fig in FIGURES},
        f"results/tables/{Path(rules.eval_table.output[0]).name}": rules.eval_table.output[0],
        f"results/tables/{Path(rules.report.output.claims).name}": rules.report.output.claims,
        **{f"results/data/{Path(csv).name}": csv for csv in rules.export.output},
        **{f"results/bench/{SCALE}/{Path(f).name}": f for f in rules.bench.output},
    }
elif SWEEP_ONLY:  # conf/study/lr_sweep.yaml: its table, which conf/algo cites
    PUBLISHED = {f"results/tables/{Path(f).name}": f for f in rules.lr_table.output}
else:  # another study (e.g. ablations) keeps its report under results/<scale>/study_<study>/
    PUBLISHED = {}
PUBLISH = PUBLISH and bool(PUBLISHED)


if PUBLISH:

    rule publish:
        input:
            list(PUBLISHED.values()),
        output:
            list(PUBLISHED),
        log:
            f"{REPORT}/logs/publish.log",
        threads: 1
        conda:
            ENV
        script:
            "../scripts/publish.py"
