"""Rule replicates: the count-split replicates of one reconstruction and its sd volumes."""

from pathlib import Path

from edxtomo.align import read_transforms
from edxtomo.io import load_tilt_series
from edxtomo.options import ReconstructOptions
from edxtomo.runtime import rule_context
from edxtomo.tomo.weights import read_chosen_weights
from edxtomo.uncertainty import method_replicates, write_replicates

with rule_context(snakemake.log[0], snakemake.threads):
    extracted = load_tilt_series(snakemake.input.extracted)
    weights_tsv = Path(snakemake.input.full) / "weights.tsv"
    replicates = method_replicates(
        extracted,
        read_transforms(Path(snakemake.input.aligned) / "transforms.tsv"),
        snakemake.wildcards.method,
        ReconstructOptions.model_validate(snakemake.params.options),
        snakemake.params.replicates,
        chosen_weights=read_chosen_weights(weights_tsv) if weights_tsv.exists() else None,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
    )
    write_replicates(replicates, snakemake.output[0], extracted.pixel_size_nm)
