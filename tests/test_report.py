"""Report figures: geometry that a picture cannot be trusted to show."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from edxtomo.report import draw_outline  # noqa: E402


def test_outline_lies_on_the_labelled_pixels_as_imshow_draws_them():
    # a particle near the top-left corner: rows 2-9, columns 5-14, of 0.5 nm voxels
    voxel_nm = 0.5
    mask = np.zeros((40, 50), bool)
    mask[2:10, 5:15] = True
    fig, ax = plt.subplots()
    ax.imshow(mask, extent=(0, 50 * voxel_nm, 40 * voxel_nm, 0))
    (vertices,) = draw_outline(ax, mask, voxel_nm).allsegs[0]
    plt.close(fig)
    # the 0.5 level runs half way between pixel centres: on the pixels' outer edges
    assert vertices[:, 1].min() == pytest.approx(2 * voxel_nm)
    assert vertices[:, 1].max() == pytest.approx(10 * voxel_nm)
    assert vertices[:, 0].min() == pytest.approx(5 * voxel_nm)
    assert vertices[:, 0].max() == pytest.approx(15 * voxel_nm)
