"""Rule figure_selfcheck: deep against tv on held-out counts, per element."""

from pathlib import Path

import pandas as pd

from edxtomo.report import plot_no_data, plot_selfcheck
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    table = Path(snakemake.input[0]) / "selfcheck.tsv"
    if table.exists():
        plot_selfcheck(pd.read_csv(table, sep="\t"), snakemake.output[0])
    else:
        plot_no_data(snakemake.output[0], "self-check turned off (reconstruct.deep.selfcheck)")
