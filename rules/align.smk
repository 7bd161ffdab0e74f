rule align:
    input:
        "results/{sample}/extracted",
    output:
        directory("results/{sample}/aligned"),
    log:
        "logs/align/{sample}.log",
    conda:
        "../envs/recon.yaml"
    threads: 1  # as reconstruct (rules/reconstruct.smk)
    resources:
        gpu=torch_gpus,
    params:
        options=stage_options("align"),
        device=CONFIG.device,
    script:
        "../scripts/align.py"
