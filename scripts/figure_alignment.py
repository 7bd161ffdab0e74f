"""Rule figure_alignment: sinograms before and after, shifts and matching residuals."""

from pathlib import Path

import numpy as np

from edxtomo.align import read_transforms
from edxtomo.report import plot_alignment
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    aligned = Path(snakemake.input[0])
    transforms = read_transforms(aligned / "transforms.tsv")
    with np.load(aligned / "diagnostics.npz") as diagnostics:
        plot_alignment(dict(diagnostics), transforms, snakemake.output[0],
                       title=snakemake.wildcards.sample)
