# Count-split replicates of one reconstruction (delete-a-group jackknife, edxtomo.uncertainty):
# their own rule, so that a change to the analyze options never reruns them. They take the
# weights the full-data reconstruction chose (its weights.tsv) where a weight is `auto`.
rule replicates:
    input:
        extracted="results/{sample}/extracted",
        aligned="results/{sample}/aligned",
        full="results/{sample}/recon/{method}",
    output:
        directory("results/{sample}/replicates/{method}"),
    log:
        "logs/replicates/{sample}_{method}.log",
    conda:
        "../envs/gpu.yaml"
    threads: 1  # as reconstruct (rules/reconstruct.smk)
    resources:
        gpu=torch_gpus,
    params:
        replicates=CONFIG.analyze.intervals.replicates,
        options=method_options,
        seed=CONFIG.seed,
        device=CONFIG.device,
    script:
        "../scripts/replicates.py"
