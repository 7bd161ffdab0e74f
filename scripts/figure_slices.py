"""Rule figure_slices: orthogonal slices through every channel of a reconstruction."""

from edxtomo.io import read_volume_folder
from edxtomo.report import plot_orthoslices
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    volumes, voxel_size_nm = read_volume_folder(snakemake.input[0])
    title = f"{snakemake.wildcards.sample}: {snakemake.wildcards.method}"
    plot_orthoslices(volumes, voxel_size_nm, snakemake.output[0], title=title)
