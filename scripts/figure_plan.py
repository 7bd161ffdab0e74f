"""Rule figure_plan: dose against precision, one panel per element, one line per tilt scheme."""

import pandas as pd

from edxtomo.plan import recommendations
from edxtomo.report import plot_plan
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    fit = pd.read_csv(snakemake.input.fit, sep="\t")
    plot_plan(pd.read_csv(snakemake.input.table, sep="\t"), fit, recommendations(fit),
              snakemake.output[0])
