"""Rule align: register the tilt series and resample every channel once."""

from pathlib import Path

import numpy as np

from edxtomo.align import align_series, write_transforms
from edxtomo.io import atomic_path, load_tilt_series, save_tilt_series
from edxtomo.options import AlignOptions
from edxtomo.runtime import rule_context

with rule_context(snakemake.log[0], snakemake.threads):
    series = load_tilt_series(snakemake.input[0])
    options = AlignOptions.model_validate(snakemake.params.options)
    aligned, transforms, diagnostics = align_series(series, options, device=snakemake.params.device)
    out = Path(snakemake.output[0])
    save_tilt_series(aligned, out)
    write_transforms(transforms, out / "transforms.tsv")
    with atomic_path(out / "diagnostics.npz") as tmp:
        np.savez_compressed(tmp, **diagnostics)
