"""Rule plan_point: one dose and tilt scheme of the plan, simulated, reconstructed, measured."""

from edxtomo.io import atomic_path
from edxtomo.options import AnalyzeOptions, PlanOptions, ReconstructOptions, TiltScheme
from edxtomo.plan import measure_point
from edxtomo.runtime import rule_context
from edxtomo.simulate import load_preset

with rule_context(snakemake.log[0], snakemake.threads):
    params = snakemake.params
    rows = measure_point(
        load_preset(snakemake.input.preset),
        TiltScheme.model_validate(params.scheme),
        int(snakemake.wildcards.counts),
        PlanOptions.model_validate(params.options),
        ReconstructOptions.model_validate(params.reconstruct),
        AnalyzeOptions.model_validate(params.analyze),
        tilt_max_deg=params.tilt_max_deg,
        seed=params.seed,
        device=params.device,
    )
    with atomic_path(snakemake.output[0]) as tmp:
        rows.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
