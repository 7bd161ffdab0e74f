"""Rule extract: raw spectrum images (or ready maps) to a calibrated tilt series."""

import glob
from pathlib import Path

from edxtomo.extract import extract_tilt_series
from edxtomo.io import atomic_path, load_maps_series, save_tilt_series
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads) as log:
    sample, options = snakemake.params.sample, snakemake.params.options
    elements = list(sample["elements"]) or options["elements"] or None
    angles_deg = list(sample["angles_deg"]) or None
    out = Path(snakemake.output[0])
    if sample["maps"]:
        series = load_maps_series(sample["maps"], sample["angles"], elements,
                                  pixel_size_nm=sample["pixel_size_nm"], angles_deg=angles_deg)
        spectrum = None
    else:
        series, spectrum = extract_tilt_series(
            sorted(glob.glob(sample["raw"])),
            elements=elements,
            lines=options["lines"],
            integration_fwhm=options["integration_fwhm"],
            background=options["background"],
            background_sigma_px=options["background_sigma_px"],
            method=options["method"],
            keep_frames=options["keep_frames"],
            angles_deg=angles_deg,
            pixel_size_nm=sample["pixel_size_nm"],
        )
    save_tilt_series(series, out)
    if spectrum is not None:
        for table, name in ((spectrum.to_dataframe(), "spectrum.tsv"),
                            (spectrum.windows_dataframe(), "windows.tsv")):
            with atomic_path(out / name) as tmp:
                table.to_csv(tmp, sep="\t", index=False)
    log.info("%d tilts, channels %s, pixel %.4g nm", series.n_tilt, list(series.channels),
             series.pixel_size_nm)
