# Held-out evaluation of the SFT policy and of every RL run (one job per model): n samples per
# problem, execution, pass@k and diversity (KL to π_ref included), for every split of
# workflow/config.yaml and the protocols the study entry asks for (protocols_of). Each job also writes
# exact_logprobs.jsonl: the enumerated correct programs and its policy's log-prob of each (the exact
# success mass). The SFT policy is π_ref, so every RL evaluation reads the SFT evaluation's file
# (exact_mass.ref_logprobs) instead of enumerating the programs and running π_ref again.
rule eval:
    input:
        unpack(eval_inputs),
    output:
        summary=f"{PATHS.eval}/{{name}}/summary.json",
        logprobs=f"{PATHS.eval}/{{name}}/exact_logprobs.jsonl",
    log:
        f"{PATHS.logs}/eval/{{name}}.log",
    benchmark:
        f"{PATHS.benchmarks}/eval/{{name}}.tsv"  # <rule>/<job>: read_jobs (analysis/export.py)
    threads: world_size("evaluate")  # one per process (hydra_cmd: torchrun when scale.world_size > 1)
    resources:
        gpu=gpus("evaluate"),
    conda:
        ENV
    params:
        scale=SCALE,
        conf=conf_hash("evaluate"),
        args=eval_args,
    shell:
        hydra_cmd("evaluate")


rule eval_all:
    input:
        expand(f"{PATHS.eval}/{{name}}/summary.json", name=["sft"] + RUN_IDS),
