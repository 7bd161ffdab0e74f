# Tables and figures take seconds each: on a cluster they run in the Snakemake process
# itself, not as a dozen jobs that each wait in the queue.
localrules:
    tables,
    figure_spectrum,
    figure_alignment,
    figure_slices,
    figure_segmentation,
    figure_thickness,
    figure_distributions,
    figure_selfcheck,
    figure_weights,
    figure_haadf_model,


rule tables:
    input:
        analysis_dirs,
    output:
        particles=report(
            "results/tables/particles.tsv",
            caption="../resources/report/particles.rst",
            category="Tables",
        ),
        samples=report(
            "results/tables/samples.tsv",
            caption="../resources/report/samples.rst",
            category="Tables",
        ),
        comparisons=report(
            "results/tables/comparisons.tsv",
            caption="../resources/report/comparisons.rst",
            category="Tables",
        ),
    log:
        "logs/tables/tables.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        sample_methods=ANALYSIS_KEYS,
    script:
        "../scripts/tables.py"


rule figure_spectrum:
    input:
        "results/{sample}/extracted",
    output:
        report(
            "results/figures/{sample}/spectrum.png",
            caption="../resources/report/spectrum.rst",
            category="Extraction",
            subcategory="{sample}",
        ),
    log:
        "logs/figures/{sample}_spectrum.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/figure_spectrum.py"


rule figure_alignment:
    input:
        "results/{sample}/aligned",
    output:
        report(
            "results/figures/{sample}/alignment.png",
            caption="../resources/report/alignment.rst",
            category="Alignment",
            subcategory="{sample}",
        ),
    log:
        "logs/figures/{sample}_alignment.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/figure_alignment.py"


rule figure_slices:
    input:
        "results/{sample}/recon/{method}",
    output:
        report(
            "results/figures/{sample}/slices_{method}.png",
            caption="../resources/report/slices.rst",
            category="Reconstructions",
            subcategory="{sample}",
            labels={"sample": "{sample}", "method": "{method}"},
        ),
    log:
        "logs/figures/{sample}_slices_{method}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/figure_slices.py"


rule figure_segmentation:
    input:
        recon="results/{sample}/recon/{method}",
        analysis="results/{sample}/analysis/{method}",
    output:
        report(
            "results/figures/{sample}/segmentation_{method}.png",
            caption="../resources/report/segmentation.rst",
            category="Shell thickness",
            subcategory="{sample}",
            labels={
                "sample": "{sample}",
                "method": "{method}",
                "figure": "segmentation",
            },
        ),
    log:
        "logs/figures/{sample}_segmentation_{method}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/figure_segmentation.py"


rule figure_thickness:
    input:
        "results/{sample}/analysis/{method}",
    output:
        report(
            "results/figures/{sample}/thickness_{method}.png",
            caption="../resources/report/thickness.rst",
            category="Shell thickness",
            subcategory="{sample}",
            labels={"sample": "{sample}", "method": "{method}", "figure": "thickness"},
        ),
    log:
        "logs/figures/{sample}_thickness_{method}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/figure_thickness.py"


rule figure_distributions:
    input:
        "results/tables/particles.tsv",
    output:
        report(
            "results/figures/thickness_distributions.png",
            caption="../resources/report/distributions.rst",
            category="Shell thickness",
        ),
    log:
        "logs/figures/thickness_distributions.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/figure_distributions.py"


rule figure_selfcheck:
    input:
        "results/{sample}/recon/deep",
    output:
        report(
            "results/figures/{sample}/selfcheck.png",
            caption="../resources/report/selfcheck.rst",
            category="Reconstructions",
            subcategory="{sample}",
        ),
    log:
        "logs/figures/{sample}_selfcheck.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/figure_selfcheck.py"


rule figure_weights:
    input:
        "results/{sample}/recon/{method}",
    output:
        report(
            "results/figures/{sample}/weights_{method}.png",
            caption="../resources/report/weights.rst",
            category="Reconstructions",
            subcategory="{sample}",
        ),
    log:
        "logs/figures/{sample}_weights_{method}.log",
    wildcard_constraints:
        method="tv|deep",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/figure_weights.py"


rule figure_haadf_model:
    input:
        "results/{sample}/recon/fused",
    output:
        report(
            "results/figures/{sample}/haadf_model.png",
            caption="../resources/report/haadf_model.rst",
            category="Reconstructions",
            subcategory="{sample}",
        ),
    log:
        "logs/figures/{sample}_haadf_model.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/figure_haadf_model.py"
