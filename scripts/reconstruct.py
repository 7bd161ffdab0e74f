"""Rule reconstruct: SIRT, FBP, TV-KL or fused volumes of every channel of the aligned series."""

from functools import partial
from pathlib import Path

from edxtomo.align import apply_transforms, read_transforms
from edxtomo.io import load_tilt_series
from edxtomo.options import ReconstructOptions
from edxtomo.runtime import rule_context
from edxtomo.tomo.methods import reconstruct_to_folder, with_weights_of

with rule_context(snakemake.log[0], snakemake.threads):
    settings = snakemake.params.options
    # fused takes the weights the tv job chose (input `tv`, with `auto`)
    options = with_weights_of(ReconstructOptions.model_validate(settings),
                              snakemake.input.tv or None, "fused")
    series = load_tilt_series(snakemake.input.aligned)
    transforms = read_transforms(Path(snakemake.input.aligned) / "transforms.tsv")
    reconstruct_to_folder(
        snakemake.wildcards.method, options, series, snakemake.output[0],
        raw=load_tilt_series(snakemake.input.extracted),
        to_volume_frame=partial(apply_transforms, transforms=transforms,
                                angles_deg=series.angles_deg),
        seed=snakemake.params.seed, device=snakemake.params.device, workers=snakemake.threads,
        provenance={"options": str(settings)})
