"""Rule denoise: one training of step a of the deep pipeline (the self-supervised
denoising) on one sample: the extracted series, or the self-check's half of it."""

from edxtomo.deep import denoise_part, write_denoised
from edxtomo.io import load_tilt_series
from edxtomo.options import DeepOptions
from edxtomo.runtime import rule_context

with rule_context(snakemake.log.log, snakemake.threads):
    denoised = denoise_part(
        load_tilt_series(snakemake.input.extracted),
        DeepOptions.model_validate(snakemake.params.options),
        snakemake.wildcards.part,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        checkpoint_dir=snakemake.log.checkpoints,
    )
    write_denoised(denoised, snakemake.output[0])
