"""edxtomo: STEM-EDX tomography of nanocrystals, from raw tilt series to shell statistics.

Run the demo with `snakemake --cores 2`; point config/samples.tsv at your own data.

Output layout
-------------
resources/demo/{specimen}/             simulated Velox files tilt_NNN.emd, truth/ (simulate)
results/{sample}/extracted/            {channel}.hspy, background/{element}.hspy,
                                       spectrum.hspy (extract)
results/{sample}/aligned/              {channel}.hspy, background/, transforms.tsv,
                                       diagnostics.npz (align)
results/{sample}/recon/{method}/       {channel}.tif and .hspy volumes (reconstruct;
                                       method: sirt, fbp, tv, deep)
results/{sample}/analysis/{method}/    labels.tif, particles.tsv, thickness.tsv,
                                       thickness_maps.npz (analyze)
results/tables/                        particles.tsv, samples.tsv (tables)
results/figures/                       report figures (figure_*)
logs/{rule}/...                        one log per job
"""

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "resources/report/workflow.rst"


include: "rules/common.smk"
include: "rules/simulate.smk"
include: "rules/extract.smk"
include: "rules/align.smk"
include: "rules/reconstruct.smk"
include: "rules/analyze.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        final_targets(),
