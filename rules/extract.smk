rule extract:
    input:
        unpack(extract_input),
    output:
        directory("results/{sample}/extracted"),
    log:
        "logs/extract/{sample}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        sample=sample_params,
        options=stage_options("extract"),
    script:
        "../scripts/extract.py"
