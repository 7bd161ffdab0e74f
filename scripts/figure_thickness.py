"""Rule figure_thickness: equal-area thickness maps and histograms of every particle."""

from pathlib import Path

import numpy as np

from edxtomo.report import plot_shell_maps
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    with np.load(Path(snakemake.input[0]) / "thickness_maps.npz") as stacked:
        title = f"{snakemake.wildcards.sample}: {snakemake.wildcards.method}"
        plot_shell_maps(dict(stacked), snakemake.output[0], title=title)
