rule reconstruct:
    input:
        "results/{sample}/aligned",
    output:
        directory("results/{sample}/recon/{method}"),
    wildcard_constraints:
        method="sirt|fbp|tv",
    log:
        "logs/reconstruct/{sample}_{method}.log",
    params:
        options=config["reconstruct"],
        seed=config["seed"],
        device=config["device"],
    conda:
        "../envs/recon.yaml"
    threads: 2
    resources:
        gpu=device_gpus,
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
    params:
        options=config["reconstruct"],
        seed=config["seed"],
        device=config["device"],
    conda:
        "../envs/gpu.yaml"
    threads: 2
    resources:
        gpu=1,
    script:
        "../scripts/reconstruct_deep.py"
