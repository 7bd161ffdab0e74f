"""Rule reconstruct_deep: the unsupervised deep pipeline (Han et al. 2021) on one sample,
from step a's denoised maps (rule denoise)."""

from pathlib import Path

from edxtomo.align import read_transforms
from edxtomo.deep import read_denoising, run_deep, write_deep_run
from edxtomo.io import load_tilt_series
from edxtomo.options import ReconstructOptions
from edxtomo.runtime import rule_context
from edxtomo.tomo.methods import with_weights_of

with rule_context(snakemake.log.log, snakemake.threads):
    options = ReconstructOptions.model_validate(snakemake.params.options)
    # the self-check's tv takes the weights the tv job chose (input `tv`, with `auto`)
    classical = with_weights_of(options, snakemake.input.tv or None)
    run = run_deep(
        load_tilt_series(snakemake.input.extracted),
        load_tilt_series(snakemake.input.aligned),
        read_transforms(Path(snakemake.input.aligned) / "transforms.tsv"),
        options.deep,
        nz=options.nz,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        checkpoint_dir=snakemake.log.checkpoints,
        classical=classical,
        denoising=read_denoising(snakemake.input.full, snakemake.input.get("selfcheck")),
    )
    write_deep_run(run, snakemake.output[0])
