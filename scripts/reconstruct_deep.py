"""Rule reconstruct_deep: the unsupervised deep pipeline (Han et al. 2021) on one sample.

The raw, unaligned counts are denoised first (count splitting needs integer counts), then
the alignment transforms are applied to the denoised maps, then model-based
reconstruction, view enrichment and the final reconstruction run on the aligned views.
"""

from pathlib import Path

import pandas as pd

from edxtomo.align import apply_transforms, read_transforms
from edxtomo.deep import denoise_projections, reconstruct_deep
from edxtomo.io import HAADF, load_tilt_series, write_stack, write_volume
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads) as log:
    options, seed, device = snakemake.params.options, snakemake.params.seed, snakemake.params.device
    deep, out = options["deep"], Path(snakemake.output[0])
    checkpoints = snakemake.params.checkpoints
    extracted = load_tilt_series(snakemake.input.extracted)
    aligned = load_tilt_series(snakemake.input.aligned)
    transforms = read_transforms(Path(snakemake.input.aligned) / "transforms.tsv")
    denoised = denoise_projections(extracted, seed=seed, device=device,
                                   options=deep["denoise"], checkpoint_dir=checkpoints)
    log.info("denoising scheme: %s", denoised.scheme)
    views = {name: apply_transforms(stack, transforms, angles_deg=extracted.angles_deg)
             for name, stack in denoised.projections.items()}
    if HAADF in aligned.channels:
        views = {HAADF: aligned.net_counts(HAADF), **views}
    result = reconstruct_deep(views, aligned.angles_deg, seed=seed, device=device,
                              nz=options["nz"], mbir=deep["mbir"], enrich=deep["enrich"],
                              final=deep["final"], checkpoint_dir=checkpoints)
    pixel_nm, provenance = aligned.pixel_size_nm, {"method": "deep", "scheme": denoised.scheme}
    for name, volume in result.volumes.items():
        write_volume(out / f"{name}.tif", volume, pixel_nm, name, provenance)
        write_volume(out / "mbir" / f"{name}.tif", result.mbir_volumes[name], pixel_nm, name)
        write_stack(out / "enriched" / f"{name}.hspy", result.enriched_views[name],
                    result.dense_angles_deg, pixel_nm, name)
    for name, stack in denoised.projections.items():
        write_stack(out / "denoised" / f"{name}.hspy", stack, extracted.angles_deg, pixel_nm,
                    name, {"frame": "raw (unaligned)", "scheme": denoised.scheme})
    losses = {**denoised.losses, **result.losses}
    pd.DataFrame({k: pd.Series(v) for k, v in losses.items()}).to_csv(
        out / "losses.tsv", sep="\t", index_label="step")
    log.info("step times (s): %s", result.seconds)
