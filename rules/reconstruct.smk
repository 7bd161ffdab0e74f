rule reconstruct:
    input:
        aligned="results/{sample}/aligned",
        extracted="results/{sample}/extracted",
        tv=fused_tv,
    output:
        directory("results/{sample}/recon/{method}"),
    log:
        "logs/reconstruct/{sample}_{method}.log",
    wildcard_constraints:
        method="sirt|fbp|tv|fused",
    conda:
        "../envs/recon.yaml"
    # One thread, as align and replicates: a workflow has many such jobs side by side
    # (methods, replicates, samples), and at the demo's size a second thread gave tv 1.55
    # cores and sirt 1.14 (bench/README.md). For a few large fields on a CPU, raise it
    # with `--set-threads reconstruct=4`.
    threads: 1
    resources:
        gpu=torch_gpus,
    params:
        options=method_options,
        device=CONFIG.device,
        seed=CONFIG.seed,
    script:
        "../scripts/reconstruct.py"


# The training checkpoints are a second log: Snakemake keeps logs of a failed job, so an
# interrupted deep job resumes from them (delete the folder to start over).
rule reconstruct_deep:
    input:
        extracted="results/{sample}/extracted",
        aligned="results/{sample}/aligned",
        tv=selfcheck_tv,
    output:
        directory("results/{sample}/recon/deep"),
    log:
        log="logs/reconstruct/{sample}_deep.log",
        checkpoints=directory("logs/reconstruct/{sample}_deep_checkpoints"),
    conda:
        "../envs/gpu.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        options=CONFIG.reconstruct.method_settings("deep"),
        seed=CONFIG.seed,
        device=CONFIG.device,
    script:
        "../scripts/reconstruct_deep.py"
