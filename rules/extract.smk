rule extract:
    input:
        unpack(extract_input),
    output:
        directory("results/{sample}/extracted"),
    log:
        "logs/extract/{sample}.log",
    params:
        sample=sample_params,
        options=config["extract"],
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/extract.py"
