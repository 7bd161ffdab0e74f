rule analyze:
    input:
        "results/{sample}/recon/{method}",
    output:
        directory("results/{sample}/analysis/{method}"),
    log:
        "logs/analyze/{sample}_{method}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        options=stage_options("analyze"),
    script:
        "../scripts/analyze.py"
