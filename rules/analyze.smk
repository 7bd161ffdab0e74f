rule analyze:
    input:
        "results/{sample}/recon/{method}",
    output:
        directory("results/{sample}/analysis/{method}"),
    log:
        "logs/analyze/{sample}_{method}.log",
    params:
        options=config["analyze"],
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/analyze.py"
