"""edxtomo: STEM-EDX tomography of nanocrystals, from raw tilt series to shell statistics.

Run the demo with `snakemake --cores 2`; point config/samples.tsv at your own data.

Output layout
-------------
resources/demo/{specimen}/             simulated Velox files tilt_NNN.emd, truth/ (simulate)
results/{sample}/extracted/            {channel}.hspy, background/{element}.hspy,
                                       spectrum.tsv, windows.tsv (extract)
results/{sample}/aligned/              {channel}.hspy, background/, transforms.tsv,
                                       diagnostics.npz (align)
results/{sample}/denoised/{part}/      {element}.hspy, losses.tsv: deep's step a, one job
                                       per training (denoise; part: full, selfcheck)
results/{sample}/recon/{method}/       {channel}.tif and .hspy volumes (reconstruct;
                                       method: sirt, fbp, tv, fused, deep); deep also
                                       writes mbir/, enriched/, losses.tsv, selfcheck.tsv
results/{sample}/replicates/{method}/  {channel}_sd.tif and .hspy: per-voxel standard
                                       deviation of the volume; replicate_{k}/{channel}.tif:
                                       the count-split replicates (replicates; methods of
                                       analyze.intervals)
results/{sample}/analysis/{method}/    labels.tif, particles.tsv, thickness.tsv (with 95%
                                       intervals), thickness_maps.npz (analyze)
results/tables/                        particles.tsv, samples.tsv, comparisons.tsv (tables)
results/figures/                       report figures (figure_*)
results/plan/                          plan.tsv, fit.tsv, recommendation.txt, precision.png,
                                       points/{scheme}/{counts}.tsv (`snakemake plan` only)
logs/{rule}/...                        one log per job
logs/denoise/{sample}_{part}_checkpoints/, logs/reconstruct/{sample}_deep_checkpoints/
                                       training checkpoints, declared as logs so that an
                                       interrupted job resumes from them

Configuration: config/config.yaml for the demo, or your own file given with --configfile
(config/README.md lists every key); validated against the options classes of
edxtomo.options, and every sample's files checked, before any job is planned.
"""

from snakemake.utils import min_version

min_version("9.0")


# config/config.yaml is the demo's configuration: it is read only when no --configfile is
# given, so that a user's own configuration never inherits the demo's settings.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "resources/report/workflow.rst"


include: "rules/common.smk"
include: "rules/simulate.smk"
include: "rules/extract.smk"
include: "rules/align.smk"
include: "rules/reconstruct.smk"
include: "rules/uncertainty.smk"
include: "rules/analyze.smk"
include: "rules/report.smk"
include: "rules/plan.smk"


onerror:
    report_failed_jobs(log)


rule all:
    default_target: True
    input:
        final_targets(),
