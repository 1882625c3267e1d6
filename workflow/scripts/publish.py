"""Rule publish (workflow/rules/publish.smk): copy input i to output i, each a fresh file (a new mtime,
so the copies are newer than what they copy and a second `snakemake` has nothing to do)."""

import shutil

with open(snakemake.log[0], "w") as log:  # noqa: F821 (Snakemake's script global)
    for src, dst in zip(snakemake.input, snakemake.output, strict=True):  # noqa: F821
        shutil.copyfile(src, dst)
        print(f"{src} -> {dst}", file=log)
