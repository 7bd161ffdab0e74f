import dataclasses
import glob

from edxtomo.config import load_samples, validate_config

validate_config(config, workflow.source_path("../config/schemas/config.schema.yaml"))
SAMPLES = load_samples(
    config["samples"],
    workflow.source_path("../config/schemas/samples.schema.yaml"),
    config,
)
RECON_METHODS = config["reconstruct"]["methods"]
ANALYZE_METHODS = [m for m in config["analyze"]["methods"] if m in RECON_METHODS]
CLASSICAL_METHODS = [m for m in RECON_METHODS if m != "deep"]


wildcard_constraints:
    sample="|".join(SAMPLES) or "no-sample",
    specimen="|".join(config["simulate"]) or "no-specimen",
    method="|".join(RECON_METHODS) or "no-method",


def specimen_preset(wildcards):
    """Preset YAML of a simulated specimen."""
    return config["simulate"][wildcards.specimen]["preset"]


def specimen_seed(wildcards):
    """Seed of a simulated specimen: its own, else the top-level seed."""
    return config["simulate"][wildcards.specimen].get("seed", config["seed"])


def extract_input(wildcards):
    """Raw files of a sample, the simulated folder that will hold them, or its maps."""
    sample = SAMPLES[wildcards.sample]
    if sample.simulated:
        return {"raw": f"resources/demo/{sample.simulated}"}
    if sample.raw:
        return {"raw": sorted(glob.glob(sample.raw))}
    return {"angles": sample.angles}


def sample_params(wildcards):
    """The sample sheet row as a plain dict for the extract script."""
    return dataclasses.asdict(SAMPLES[wildcards.sample])


def device_gpus(wildcards):
    """GPUs a PyTorch job takes: 1 when the configured device resolves to CUDA, else 0."""
    if config["device"] == "auto":
        import torch

        return int(torch.cuda.is_available())
    return int(config["device"] == "cuda")


def deep_checkpoints(wildcards):
    """Folder of the deep job's training checkpoints: outside its output, so that an
    interrupted job resumes instead of starting over (delete it to start over)."""
    return f"results/{wildcards.sample}/.checkpoints/deep"


ANALYSIS_KEYS = [(sample, method) for sample in SAMPLES for method in ANALYZE_METHODS]


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
