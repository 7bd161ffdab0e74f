"""Rule plan_table: the error per dose, tilt scheme and element; the dose law; the advice."""

import pandas as pd

from edxtomo.io import atomic_path
from edxtomo.plan import fit_dose, recommendations, summarize_plan
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads) as log:
    points = pd.concat([pd.read_csv(path, sep="\t") for path in snakemake.input],
                       ignore_index=True)
    table = summarize_plan(points)
    fit = fit_dose(table, snakemake.params.target_nm)
    lines = recommendations(fit)
    for frame, path in ((table, snakemake.output.table), (fit, snakemake.output.fit)):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    with atomic_path(snakemake.output.recommendation) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines))
    for line in lines:
        log.info("%s", line)
