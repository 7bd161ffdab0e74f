"""Rule reconstruct: SIRT, FBP, TV-KL or fused volumes of every channel of the aligned series."""

from functools import partial
from pathlib import Path

from edxtomo.align import apply_transforms, read_transforms
from edxtomo.io import load_tilt_series, write_volume
from edxtomo.options import ReconstructOptions
from edxtomo.runtime import rule_context
from edxtomo.tomo.fused import write_fit
from edxtomo.tomo.methods import fused_series, reconstruct_series, tv_weight_curves
from edxtomo.tomo.weights import AUTO, write_weights

with rule_context(snakemake.log[0], snakemake.threads):
    method, settings = snakemake.wildcards.method, snakemake.params.options
    options, out = ReconstructOptions.model_validate(settings), Path(snakemake.output[0])
    series = load_tilt_series(snakemake.input.aligned)
    curves = None
    if method == "tv" and options.tv.weight == AUTO:
        transforms = read_transforms(Path(snakemake.input.aligned) / "transforms.tsv")
        curves = tv_weight_curves(
            series, options, seed=snakemake.params.seed, device=snakemake.params.device,
            raw=load_tilt_series(snakemake.input.extracted),
            to_volume_frame=partial(apply_transforms, transforms=transforms,
                                    angles_deg=series.angles_deg))
        write_weights(curves, out / "weights.tsv")
    if method == "fused":
        transforms = read_transforms(Path(snakemake.input.aligned) / "transforms.tsv")
        volumes, result = fused_series(
            series, options, seed=snakemake.params.seed, device=snakemake.params.device,
            raw=load_tilt_series(snakemake.input.extracted),
            to_volume_frame=partial(apply_transforms, transforms=transforms,
                                    angles_deg=series.angles_deg))
        write_fit(result, out / "haadf_model.tsv")
    else:
        volumes = reconstruct_series(series, method, options, device=snakemake.params.device,
                                     workers=snakemake.threads, tv_weights=curves)
    provenance = {"method": method, "options": str(settings), "angles_deg": series.angles_deg}
    for name, volume in volumes.items():
        write_volume(out / f"{name}.tif", volume, series.pixel_size_nm, name, provenance)
