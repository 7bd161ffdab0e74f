"""Rule figure_distributions: particle shell thickness per element, sample and method."""

import pandas as pd

from edxtomo.report import plot_thickness_distributions
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    particles = pd.read_csv(snakemake.input[0], sep="\t")
    plot_thickness_distributions(particles, snakemake.output[0])
