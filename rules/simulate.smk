rule simulate:
    input:
        preset=specimen_preset,
    output:
        directory("resources/demo/{specimen}"),
    log:
        "logs/simulate/{specimen}.log",
    params:
        seed=specimen_seed,
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/simulate.py"
