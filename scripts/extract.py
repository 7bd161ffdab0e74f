"""Rule extract: raw spectrum images (or ready maps) to a calibrated tilt series."""

from edxtomo.config import Sample
from edxtomo.extract import extract_sample, write_extracted
from edxtomo.options import ExtractOptions
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads) as log:
    sample = Sample(**snakemake.params.sample)
    options = ExtractOptions.model_validate(snakemake.params.options)
    series, spectrum = extract_sample(sample, snakemake.input.get("raw", []), options)
    write_extracted(series, spectrum, snakemake.output[0])
    log.info("%d tilts, channels %s, pixel %.4g nm", series.n_tilt, list(series.channels),
             series.pixel_size_nm)
