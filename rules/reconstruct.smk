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


# Step a of deep, one job per training: the extracted series ("full") and, with the
# self-check on, its half of the counts ("selfcheck"). They need only the extracted series,
# so they start beside align and the classical methods, not after tv. The training
# checkpoints are a second log: Snakemake keeps logs of a failed job, so an interrupted job
# resumes from them (delete the folder to start over).
rule denoise:
    input:
        extracted="results/{sample}/extracted",
    output:
        directory("results/{sample}/denoised/{part}"),
    log:
        log="logs/denoise/{sample}_{part}.log",
        checkpoints=directory("logs/denoise/{sample}_{part}_checkpoints"),
    wildcard_constraints:
        part="|".join(DENOISING_PARTS),
    conda:
        "../envs/gpu.yaml"
    threads: 1
    # the longest chain starts here (denoise, deep, its analysis): first of the ready jobs
    priority: 1
    resources:
        gpu=deep_gpus,
    params:
        options=CONFIG.reconstruct.deep.denoising_settings(),
        seed=CONFIG.seed,
        device=CONFIG.device,
    script:
        "../scripts/denoise.py"


rule reconstruct_deep:
    input:
        unpack(denoised_parts),
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
        gpu=deep_gpus,
    params:
        options=CONFIG.reconstruct.method_settings("deep"),
        seed=CONFIG.seed,
        device=CONFIG.device,
    script:
        "../scripts/reconstruct_deep.py"
