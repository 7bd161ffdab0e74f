"""Rule tables: per-particle rows, per-sample summaries and pairwise sample comparisons."""

from pathlib import Path

import pandas as pd

from edxtomo.compare import compare_samples
from edxtomo.io import atomic_path
from edxtomo.runtime import rule_context
from edxtomo.thickness import summarize_samples

with rule_context(snakemake.log[0], snakemake.threads) as log:
    frames = []
    keys = snakemake.params.sample_methods
    for (sample, method), folder in zip(keys, snakemake.input, strict=True):
        rows = pd.read_csv(Path(folder) / "thickness.tsv", sep="\t")
        frames.append(rows.assign(sample=sample, method=method))
    particles = pd.concat(frames, ignore_index=True)
    leading = ["sample", "method"]
    particles = particles[leading + [c for c in particles.columns if c not in leading]]
    summaries = summarize_samples(particles)
    comparisons = compare_samples(particles)
    for table, path in ((particles, snakemake.output.particles),
                        (summaries, snakemake.output.samples),
                        (comparisons, snakemake.output.comparisons)):
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    log.info("%d particle rows, %d summary rows, %d comparison rows",
             len(particles), len(summaries), len(comparisons))
