rule simulate:
    input:
        preset=specimen_preset,
    output:
        directory("resources/demo/{specimen}"),
    log:
        "logs/simulate/{specimen}.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        seed=specimen_seed,
    script:
        "../scripts/simulate.py"
