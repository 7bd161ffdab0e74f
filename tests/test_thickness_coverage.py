"""Coverage of the count-split 95% intervals of the mean shell thickness (issue 13).

Seeded simulated specimens (one InP/ZnSe/ZnS dot per 40^3 field, shells of 4.3 and 3.6
voxels, 13 tilts, 3000 net counts per element and tilt, high enough that SIRT's thickness is
not broken by noise), reconstructed by SIRT with K = 5 delete-a-group count-split
replicates, segmented and measured as the workflow does; each particle-and-element row's
interval is checked against the simulator's true mean thickness. The specimen and the
measurement are those of ``bench/intervals_coverage.py`` (one code path, imported here).

Measured 17 of 18 rows (0.94: S and Se 6/6, Zn 5/6) since a dip of a ray's profile under
the level inside the shell is bridged (:mod:`edxtomo.thickness.rays`); before, SIRT's noise
broke the thick Zn shell on single rays and read it 13.6% thin, a bias every replicate
shares, and the rows were covered in 0.67 (Zn 1/6).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

BENCH = Path(__file__).resolve().parents[1] / "bench" / "intervals_coverage.py"
SEEDS = range(6)
REPLICATES = 5
COUNTS = 3000.0


def bench_module():
    spec = importlib.util.spec_from_file_location("intervals_coverage", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nominal_95_intervals_cover_the_truth():
    bench = bench_module()
    table = pd.DataFrame([row for seed in SEEDS
                          for row in bench.specimen_rows(seed, COUNTS, REPLICATES, "cpu",
                                                         method="sirt")])
    assert len(table) == 3 * len(SEEDS)
    # Calibrated intervals would cover each of the 18 rows with probability 0.95: at least
    # 85% (16 rows) with probability 0.94 (Binomial(18, 0.95)); the acceptance.
    coverage = bench.covered(table).mean()
    assert coverage >= 0.85, table[["seed", "element", "thickness_mean_nm", "true_mean_nm",
                                    "thickness_mean_nm_ci_low", "thickness_mean_nm_ci_high"]]
