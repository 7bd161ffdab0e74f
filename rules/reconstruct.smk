rule reconstruct:
    input:
        "results/{sample}/aligned",
    output:
        directory("results/{sample}/recon/{method}"),
    log:
        "logs/reconstruct/{sample}_{method}.log",
    wildcard_constraints:
        method="sirt|fbp|tv",
    conda:
        "../envs/recon.yaml"
    threads: 2
    resources:
        gpu=device_gpus,
    params:
        options=config["reconstruct"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/reconstruct.py"


rule reconstruct_deep:
    input:
        extracted="results/{sample}/extracted",
        aligned="results/{sample}/aligned",
    output:
        directory("results/{sample}/recon/deep"),
    log:
        "logs/reconstruct/{sample}_deep.log",
    conda:
        "../envs/gpu.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        options=config["reconstruct"],
        seed=config["seed"],
        device=config["device"],
        checkpoints=deep_checkpoints,
    script:
        "../scripts/reconstruct_deep.py"
