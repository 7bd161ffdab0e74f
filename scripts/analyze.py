"""Rule analyze: segment a reconstruction into particles and measure every shell."""

from pathlib import Path

import numpy as np

from edxtomo.io import HAADF, write_labels
from edxtomo.particles import load_specimen, segment_particles
from edxtomo.runtime import rule_context
from edxtomo.thickness import particle_thickness_table, stack_shell_maps

with rule_context(snakemake.log[0], snakemake.threads) as log:
    options = snakemake.params.options
    recon = Path(snakemake.input[0])
    volumes, voxel_size_nm = load_specimen({p.stem: p for p in sorted(recon.glob("*.tif"))})
    haadf = volumes.pop(HAADF, None)
    segmentation = segment_particles(
        volumes,
        voxel_size_nm,
        haadf=haadf if options["segment_on"] == "auto" else None,
        threshold=options["threshold"],
        min_volume_nm3=options["min_volume_nm3"],
    )
    log.info("%d particles at threshold %.4g", len(segmentation.table), segmentation.threshold)
    rows, maps = particle_thickness_table(
        volumes,
        segmentation.labels,
        segmentation.table,
        voxel_size_nm,
        center=options["center"],
        step_deg=options["step_deg"],
        threshold=options["shell_threshold"],
    )
    out = Path(snakemake.output[0])
    out.mkdir(parents=True)
    write_labels(out / "labels.tif", segmentation.labels, voxel_size_nm)
    segmentation.table.to_csv(out / "particles.tsv", sep="\t", index=False)
    rows.to_csv(out / "thickness.tsv", sep="\t", index=False)
    np.savez_compressed(out / "thickness_maps.npz", **stack_shell_maps(maps))
    log.info("flags: %s", dict(zip(*np.unique(rows["flag"], return_counts=True), strict=True)))
