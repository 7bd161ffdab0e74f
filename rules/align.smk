rule align:
    input:
        "results/{sample}/extracted",
    output:
        directory("results/{sample}/aligned"),
    log:
        "logs/align/{sample}.log",
    conda:
        "../envs/recon.yaml"
    threads: 2
    resources:
        gpu=device_gpus,
    params:
        options=config["align"],
        device=config["device"],
    script:
        "../scripts/align.py"
