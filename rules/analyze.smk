rule analyze:
    input:
        unpack(analyze_input),
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
