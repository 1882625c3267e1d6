# spolab: one DAG from data to every figure. `snakemake --cores 2` runs the default scale and publishes
# its report (README, figures, tables, CSVs, benchmark) to the committed paths under results/;
# `snakemake --cores 2 --config scale=smoke` runs the CI-sized one, which stays under results/smoke/.
# Every DAG output lives under results/<scale>/. Rules live in workflow/rules/.
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: Path(workflow.basedir) / "workflow" / "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/mlflow.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/rl.smk"
include: "workflow/rules/eval.smk"
include: "workflow/rules/exact.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/publish.smk"


check_overrides()  # every rule is read: the entry points they run are known


rule all:
    input:
        rules.publish.output if PUBLISH else rules.lr_table.output if SWEEP_ONLY else rules.report.output,
    default_target: True
