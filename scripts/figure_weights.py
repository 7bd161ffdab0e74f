"""Rule figure_weights: the held-out curves behind `weight: auto`, and the chosen weights."""

from pathlib import Path

import pandas as pd

from edxtomo.report import plot_no_data, plot_weights
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    path = Path(snakemake.input[0]) / "weights.tsv"
    if path.exists():
        table = pd.read_csv(path, sep="\t")
        title = "; ".join(dict.fromkeys(table["method"]))
        plot_weights(table, snakemake.output[0], f"{snakemake.wildcards.method}: {title}")
    else:
        plot_no_data(snakemake.output[0], "weights set in the configuration (not auto)")
