"""Rule figure_haadf_model: the fitted HAADF model of `fused` and the share it explains."""

from pathlib import Path

import pandas as pd

from edxtomo.report import plot_haadf_model
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    fit = pd.read_csv(Path(snakemake.input[0]) / "haadf_model.tsv", sep="\t")
    plot_haadf_model(fit, snakemake.output[0], f"fused, {snakemake.wildcards.sample}")
