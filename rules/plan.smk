# Acquisition planning: not part of `all`; `snakemake plan --cores N` runs it, and
# `snakemake plan --report plan.html` reports it. One job per dose and tilt scheme.


# The table and its figure take seconds: on a cluster they run in the Snakemake process.
localrules:
    plan_table,
    figure_plan,
    plan,


rule plan_point:
    input:
        preset=CONFIG.plan.preset,
    output:
        "results/plan/points/{scheme}/{counts}.tsv",
    log:
        "logs/plan/{scheme}_{counts}.log",
    wildcard_constraints:
        scheme=PLAN_SCHEME_PATTERN,
        counts="[0-9]+",
    conda:
        "../envs/recon.yaml"
    threads: 2
    resources:
        gpu=torch_gpus,
    params:
        scheme=plan_scheme,
        options=CONFIG.plan.point_settings(),
        tilt_max_deg=CONFIG.plan.largest_tilt_deg(),
        reconstruct=CONFIG.reconstruct.method_settings(CONFIG.plan.method),
        analyze=stage_options("analyze"),
        seed=CONFIG.seed,
        device=CONFIG.device,
    script:
        "../scripts/plan_point.py"


rule plan_table:
    input:
        plan_points(),
    output:
        table=report(
            "results/plan/plan.tsv",
            caption="../resources/report/plan_tables.rst",
            category="Planning",
        ),
        fit=report(
            "results/plan/fit.tsv",
            caption="../resources/report/plan_tables.rst",
            category="Planning",
        ),
        recommendation="results/plan/recommendation.txt",
    log:
        "logs/plan/table.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    params:
        target_nm=CONFIG.plan.target_nm,
    script:
        "../scripts/plan_table.py"


rule figure_plan:
    input:
        table="results/plan/plan.tsv",
        fit="results/plan/fit.tsv",
    output:
        report(
            "results/plan/precision.png",
            caption="../resources/report/plan.rst",
            category="Planning",
        ),
    log:
        "logs/plan/figure.log",
    conda:
        "../envs/cpu.yaml"
    threads: 1
    script:
        "../scripts/figure_plan.py"


rule plan:
    input:
        "results/plan/precision.png",
        "results/plan/recommendation.txt",
