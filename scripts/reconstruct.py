"""Rule reconstruct: SIRT, FBP or TV-KL volumes of every channel of the aligned series."""

from pathlib import Path

from edxtomo.io import load_tilt_series, write_volume
from edxtomo.options import ReconstructOptions
from edxtomo.runtime import rule_context
from edxtomo.tomo.methods import reconstruct_series

with rule_context(snakemake.log[0], snakemake.threads):
    method, settings = snakemake.wildcards.method, snakemake.params.options
    series = load_tilt_series(snakemake.input[0])
    volumes = reconstruct_series(series, method, ReconstructOptions.model_validate(settings),
                                 device=snakemake.params.device, workers=snakemake.threads)
    provenance = {"method": method, "options": str(settings), "angles_deg": series.angles_deg}
    for name, volume in volumes.items():
        write_volume(Path(snakemake.output[0]) / f"{name}.tif", volume, series.pixel_size_nm,
                     name, provenance)
