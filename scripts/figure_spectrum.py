"""Rule figure_spectrum: the summed spectrum with the integration and background windows."""

from pathlib import Path

import pandas as pd

from edxtomo.report import plot_no_data, plot_spectrum
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    extracted = Path(snakemake.input[0])
    if (extracted / "spectrum.tsv").exists():
        spectrum = pd.read_csv(extracted / "spectrum.tsv", sep="\t")
        windows = pd.read_csv(extracted / "windows.tsv", sep="\t")
        plot_spectrum(spectrum, windows, snakemake.output[0], title=snakemake.wildcards.sample)
    else:
        plot_no_data(snakemake.output[0], "no spectrum: this sample was given as element maps")
