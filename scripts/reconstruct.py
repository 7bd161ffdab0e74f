"""Rule reconstruct: SIRT, FBP or TV-KL volumes of every channel of the aligned series."""

from pathlib import Path

from edxtomo.io import load_tilt_series, write_volume
from edxtomo.runtime import rule_context
from edxtomo.tomo.methods import reconstruct_series

with rule_context(snakemake.log[0], snakemake.threads):
    method, options = snakemake.wildcards.method, snakemake.params.options
    series = load_tilt_series(snakemake.input[0])
    volumes = reconstruct_series(series, method, options, device=snakemake.params.device,
                                 workers=snakemake.threads)
    out = Path(snakemake.output[0])
    for name, volume in volumes.items():
        write_volume(out / f"{name}.tif", volume, series.pixel_size_nm, name,
                     {"method": method, "options": str(options.get(method, {})),
                      "angles_deg": series.angles_deg})
