"""Rule figure_segmentation: slices of a reconstruction with the particle outlines."""

from pathlib import Path

from edxtomo.io import read_volume, read_volume_folder
from edxtomo.report import plot_orthoslices
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    volumes, voxel_size_nm = read_volume_folder(snakemake.input.recon)
    labels, _ = read_volume(Path(snakemake.input.analysis) / "labels.tif")
    title = f"{snakemake.wildcards.sample}: {snakemake.wildcards.method} segmentation"
    plot_orthoslices(volumes, voxel_size_nm, snakemake.output[0], title=title, outlines=labels)
