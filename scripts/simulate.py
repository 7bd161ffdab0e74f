"""Rule simulate: a simulated tilt series as Velox .emd files plus its ground truth."""

import yaml

from edxtomo.runtime import rule_context
from edxtomo.simulate import simulate_acquisition

with rule_context(snakemake.log[0], snakemake.threads) as log:
    with open(snakemake.input.preset) as stream:
        spec = yaml.safe_load(stream)
    files = simulate_acquisition(spec, snakemake.output[0], seed=snakemake.params.seed)
    log.info("wrote %d tilt files to %s", len(files), snakemake.output[0])
