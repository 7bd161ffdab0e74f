rule align:
    input:
        "results/{sample}/extracted",
    output:
        directory("results/{sample}/aligned"),
    log:
        "logs/align/{sample}.log",
    params:
        options=config["align"],
        seed=config["seed"],
        device=config["device"],
    conda:
        "../envs/recon.yaml"
    threads: 2
    resources:
        gpu=device_gpus,
    script:
        "../scripts/align.py"
