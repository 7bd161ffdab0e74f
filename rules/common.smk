import dataclasses
import re

from edxtomo.config import load_samples, raw_inputs
from edxtomo.options import load_workflow_config
from edxtomo.options.deep import DENOISING_PARTS
from edxtomo.preflight import preflight
from edxtomo.runtime import failed_job_lines, nvidia_gpu_present, set_job_environment

CONFIG = load_workflow_config(config)
SAMPLES = load_samples(
    CONFIG.samples,
    workflow.source_path("../config/schemas/samples.schema.yaml"),
    CONFIG,
)
if workflow.is_main_process:
    preflight(SAMPLES, CONFIG, local=workflow.local_exec)
# Inherited by every job: idle OpenMP threads sleep instead of spinning.
set_job_environment()
RECON_METHODS = CONFIG.reconstruct.methods
ANALYZE_METHODS = [m for m in CONFIG.analyze.methods if m in RECON_METHODS]
ANALYSIS_KEYS = [(sample, method) for sample in SAMPLES for method in ANALYZE_METHODS]
PLAN_SCHEMES = {scheme.label: scheme for scheme in CONFIG.plan.tilt_schemes}
PLAN_SCHEME_PATTERN = "|".join(re.escape(label) for label in PLAN_SCHEMES)


wildcard_constraints:
    sample="|".join(SAMPLES) or "no-sample",
    specimen="|".join(CONFIG.simulate) or "no-specimen",
    method="|".join(RECON_METHODS) or "no-method",


def report_failed_jobs(snakemake_log):
    """One line per failed job, with the project's own message, at the end of a failed run."""
    for line in failed_job_lines(snakemake_log):
        logger.error(line)


def specimen_preset(wildcards):
    """Preset YAML of a simulated specimen."""
    return CONFIG.simulate[wildcards.specimen].preset


def specimen_seed(wildcards):
    """Seed of a simulated specimen."""
    return CONFIG.simulation_seed(wildcards.specimen)


def extract_input(wildcards):
    """Raw files of a sample (or the simulated folder that will hold them), or its maps."""
    return raw_inputs(SAMPLES[wildcards.sample])


def sample_params(wildcards):
    """The sample sheet row as a plain dict for the extract script."""
    return dataclasses.asdict(SAMPLES[wildcards.sample])


def stage_options(stage):
    """One stage's configuration section as plain data (a rule's params)."""
    return getattr(CONFIG, stage).model_dump(mode="json", exclude={"methods"})


def method_options(wildcards):
    """The settings one reconstruction method reads, and no other method's."""
    return CONFIG.reconstruct.method_settings(wildcards.method)


def torch_gpus(wildcards):
    """GPUs a job that may use CUDA takes: 1 when the configured device resolves to CUDA.

    Decided without importing torch: `auto` counts an NVIDIA driver on the planning host.
    """
    return int(
        CONFIG.device == "cuda" or (CONFIG.device == "auto" and nvidia_gpu_present())
    )


def deep_gpus(wildcards):
    """GPUs a job of the deep pipeline takes: 1 where it may run on CUDA, a cluster job
    (its node is not the planning host) or a local one where `torch_gpus` says so; 0 with
    `device: cpu`. On a CPU-only workstation its jobs then run side by side, not one at a
    time under the profile's `gpu` limit."""
    if CONFIG.device == "cpu":
        return 0
    return 1 if not workflow.local_exec else torch_gpus(wildcards)


def chosen_tv(sample, wanted):
    """The tv reconstruction whose chosen weights a job reuses, where it wants them and tv's
    weight is `auto` (its weights.tsv exists)."""
    if wanted and CONFIG.reconstruct.tv.weight == "auto":
        return f"results/{sample}/recon/tv"
    return []


def selfcheck_tv(wildcards):
    """The tv reconstruction whose chosen weights the deep self-check's tv reuses, if any."""
    return chosen_tv(wildcards.sample, CONFIG.reconstruct.deep.selfcheck)


def denoised_parts(wildcards):
    """Step a's trainings that the deep job reads, by part (rule denoise)."""
    return {
        part: f"results/{wildcards.sample}/denoised/{part}"
        for part in CONFIG.reconstruct.deep.denoising_parts()
    }


def fused_tv(wildcards):
    """The tv reconstruction whose chosen weights fused takes for its KL term, if any."""
    wanted = wildcards.method == "fused" and CONFIG.reconstruct.fused.weight == "auto"
    return chosen_tv(wildcards.sample, wanted)


def analyze_input(wildcards):
    """A reconstruction, and its count-split replicates when it gets intervals."""
    inputs = {"recon": f"results/{wildcards.sample}/recon/{wildcards.method}"}
    intervals = CONFIG.analyze.intervals
    if intervals.replicates and wildcards.method in intervals.methods:
        inputs["replicates"] = (
            f"results/{wildcards.sample}/replicates/{wildcards.method}"
        )
    return inputs


def plan_scheme(wildcards):
    """A tilt scheme of the plan as plain data (a rule's params)."""
    return PLAN_SCHEMES[wildcards.scheme].model_dump(mode="json")


def plan_points():
    """The table of every grid point of the plan: each tilt scheme at each dose."""
    return [
        f"results/plan/points/{scheme}/{counts}.tsv"
        for scheme in PLAN_SCHEMES
        for counts in CONFIG.plan.counts_per_tilt
    ]


def analysis_dirs(wildcards):
    """Analysis folders of every sample and method, in ANALYSIS_KEYS order."""
    return [f"results/{sample}/analysis/{method}" for sample, method in ANALYSIS_KEYS]


def final_targets():
    """Everything the report shows: tables and figures for every sample and method."""
    targets = [
        *expand("results/figures/{sample}/spectrum.png", sample=SAMPLES),
        *expand("results/figures/{sample}/alignment.png", sample=SAMPLES),
        *expand(
            "results/figures/{sample}/slices_{method}.png",
            sample=SAMPLES,
            method=RECON_METHODS,
        ),
    ]
    if "deep" in RECON_METHODS:
        targets += expand("results/figures/{sample}/selfcheck.png", sample=SAMPLES)
    if "fused" in RECON_METHODS:
        targets += expand("results/figures/{sample}/haadf_model.png", sample=SAMPLES)
    targets += expand(
        "results/figures/{sample}/weights_{method}.png",
        sample=SAMPLES,
        method=[method for method in ("tv", "deep") if method in RECON_METHODS],
    )
    if ANALYZE_METHODS:
        targets += [
            "results/tables/particles.tsv",
            "results/tables/samples.tsv",
            "results/figures/thickness_distributions.png",
            *expand(
                "results/figures/{sample}/{figure}_{method}.png",
                sample=SAMPLES,
                figure=["thickness", "segmentation"],
                method=ANALYZE_METHODS,
            ),
        ]
    return targets
