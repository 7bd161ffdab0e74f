"""Rule simulate: a simulated tilt series as Velox .emd files plus its ground truth."""

from edxtomo.runtime import rule_context
from edxtomo.simulate import load_preset, simulate_acquisition

with rule_context(snakemake.log[0], snakemake.threads) as log:
    spec = load_preset(snakemake.input.preset)
    files = simulate_acquisition(spec, snakemake.output[0], seed=snakemake.params.seed)
    log.info("wrote %d tilt files and the truth to %s", len(files), snakemake.output[0])
