"""Batch comparison on the simulator (issue 13): the whole chain, not drawn tables.

Three simulated batches of the demo's InP/ZnSe/ZnS dots (``qd_demo`` preset, 64^3 at
0.7 nm, 4 separated dots per field, 3 fields per batch: 12 particles), 13 tilts over +-60
degrees at 2000 net counts per element and tilt, reconstructed by SIRT and measured as the
``analyze`` rule does (:func:`edxtomo.plan.measure_volumes`); their particle rows go to
:func:`edxtomo.compare.compare_samples`, Welch's test over particles.

- ``thick`` has a ZnSe shell 20% thicker than ``reference`` (2.88 against 2.4 nm, the same
  8% spread between particles): the comparison must find it (p < 0.05), with a 95% interval
  that holds the true difference.
- ``redraw`` is the reference preset with other seeds (other particles, other counts): the
  comparison must find no difference in the Se and S shells (p > 0.05).

Power: on such fields SIRT reads the ZnSe thickness with a spread of 0.27 to 0.31 nm
between particles (the preset's 0.2 nm, its anisotropy and the counting noise), and it
reads the difference smaller than it is, 0.27 nm for a true 0.48 on these seeds (0.40 on
the first 2 fields of each batch): its blur reads a thin shell thick, the thinner one more
(batch means 2.67 and 2.94 nm against the preset's 2.4 and 2.88). Against a difference
read about 0.35 nm, 12 and 12 particles give Welch's test a power of about 0.85 (measured
here: p = 0.032; with 8 and 8, p = 0.014). With no difference, p > 0.05 holds with
probability 0.95 per test. The seeds are fixed, so the outcome is the same on every run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT

from edxtomo.compare import compare_samples
from edxtomo.options import AnalyzeOptions, ReconstructOptions
from edxtomo.plan import measure_volumes, reconstruct_volumes, volume_shape
from edxtomo.simulate.counts import count_series, phantom_volumes

PRESET = REPO_ROOT / "resources" / "specimens" / "qd_demo.yaml"
ANGLES_DEG = np.linspace(-60.0, 60.0, 13)
COUNTS_PER_TILT = 2000.0
FIELDS = 3
ZNSE_NM = 2.4


def batch_rows(name: str, znse_nm: float, seed: int) -> pd.DataFrame:
    """Particle rows of one simulated batch, as ``results/tables/particles.tsv`` holds them."""
    spec = yaml.safe_load(PRESET.read_text())
    spec["specimen"]["touching_pairs"] = 0
    znse = spec["specimen"]["shells"][0]
    mean_nm, sd_nm = znse["thickness_nm"]
    znse["thickness_nm"] = [znse_nm, sd_nm * znse_nm / mean_nm]
    voxel_nm = float(spec["voxel_size_nm"])
    reconstruct = ReconstructOptions.model_validate({"sirt": {"iterations": 50}})
    rows = []
    for field in range(FIELDS):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(field,)))
        _, densities = phantom_volumes(spec, volume_shape(spec), float(ANGLES_DEG.max()), rng)
        series, _ = count_series(densities, ANGLES_DEG, voxel_nm, COUNTS_PER_TILT, rng)
        volumes = reconstruct_volumes(series, "sirt", reconstruct, seed, "cpu")
        _, thickness = measure_volumes(volumes, voxel_nm, AnalyzeOptions(center="In"))
        rows.append(thickness.assign(sample=name, method="sirt", field=field))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def comparisons():
    rows = pd.concat([batch_rows("reference", ZNSE_NM, seed=1),
                      batch_rows("thick", 1.2 * ZNSE_NM, seed=2),
                      batch_rows("redraw", ZNSE_NM, seed=3)], ignore_index=True)
    table = compare_samples(rows)
    means = table[table["statistic"] == "thickness_mean_nm"]
    return means.set_index(["sample_a", "sample_b", "element"])


def test_a_20_percent_thicker_shell_is_detected(comparisons):
    se = comparisons.loc[("reference", "thick", "Se")]
    assert se["n_a"] >= 11 and se["n_b"] >= 11, se  # at most one dot lost per batch
    assert se["p_value"] < 0.05, se
    # the 95% interval of the difference holds the true 0.48 nm (its reading is compressed
    # by SIRT's blur, see above, but by less than the interval's half-width)
    assert se["ci95_low"] < 0.48 < se["ci95_high"], se


def test_two_draws_of_the_same_specimen_do_not_differ(comparisons):
    for element in ("Se", "S"):
        row = comparisons.loc[("reference", "redraw", element)]
        assert row["p_value"] > 0.05, row
        assert row["ci95_low"] < 0.0 < row["ci95_high"], row
