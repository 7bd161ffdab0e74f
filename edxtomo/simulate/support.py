"""What the HAADF sees and the X-ray maps do not list: support film, gold markers, saturation.

A preset's optional ``support:`` section (all lengths in nm, centred coordinates ``[z, y, x]``
from the volume centre, z along the beam at 0 degrees)::

    support:
      film_thickness_nm: 3.0        # amorphous carbon film, a slab normal to z (0: none)
      film_z_nm: -12.0              # height of the film's mid-plane
      markers:                      # gold fiducial spheres
        - {center_nm: [-9.0, 10.0, -14.0], radius_nm: 2.5}

The film and the markers add carbon and gold number densities (atoms/nm^3) to the specimen:
they scatter onto the HAADF detector (``Z^1.7``) but are not in the element selection, so
they give no X-ray counts. :func:`saturate_haadf` makes a HAADF non-linear in thickness.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError
from edxtomo.simulate.phantoms import number_densities

CARBON_ATOMS_PER_NM3 = 100.0
"""Amorphous carbon at 2.0 g/cm^3: 2.0 / 12.011 * 6.022e23 / 1e21 atoms/nm^3."""


def support_densities(
    support: Mapping[str, Any], volume_shape: tuple[int, int, int], voxel_size_nm: float
) -> dict[str, np.ndarray]:
    """Carbon film and gold markers of a preset's ``support:`` section on a voxel grid.

    Parameters
    ----------
    support : mapping
        ``film_thickness_nm``, ``film_z_nm`` and ``markers`` (see the module notes).
    volume_shape : (nz, ny, nx)
    voxel_size_nm : float

    Returns
    -------
    dict of str to ndarray, each (nz, ny, nx) float32
        ``"C"`` and ``"Au"`` number densities (atoms/nm^3), partial volumes at the edges.
    """
    unknown = set(support) - {"film_thickness_nm", "film_z_nm", "markers"}
    if unknown:
        raise EdxtomoInputError(f"support: unknown keys {sorted(unknown)}; known: "
                                "film_thickness_nm, film_z_nm, markers")
    z, y, x = _centred_axes(volume_shape, voxel_size_nm)
    thickness = float(support.get("film_thickness_nm", 0.0))
    if thickness < 0:
        raise EdxtomoInputError(f"support.film_thickness_nm must be >= 0, got {thickness}")
    half = thickness / 2
    offset = z - float(support.get("film_z_nm", 0.0))
    # overlap of each voxel's z extent with the slab: a partial-volume edge
    edge = voxel_size_nm / 2
    overlap = np.clip(np.minimum(offset + edge, half) - np.maximum(offset - edge, -half), 0, None)
    film = np.broadcast_to(overlap / voxel_size_nm, volume_shape) * CARBON_ATOMS_PER_NM3
    gold = np.zeros(volume_shape)
    for i, marker in enumerate(support.get("markers") or []):
        try:
            cz, cy, cx = (float(v) for v in marker["center_nm"])
            radius = float(marker["radius_nm"])
        except (KeyError, TypeError, ValueError):
            raise EdxtomoInputError(f"support.markers[{i}] needs center_nm [z, y, x] and "
                                    f"radius_nm, got {marker!r}") from None
        distance = np.sqrt((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2)
        # linear partial volume over one voxel across the sphere's surface
        gold += np.clip((radius - distance) / voxel_size_nm + 0.5, 0, 1)
    gold *= number_densities("Au")["Au"]
    return {"C": film.astype(np.float32), "Au": gold.astype(np.float32)}


def saturate_haadf(haadf: np.ndarray, level: float) -> np.ndarray:
    """A HAADF that saturates with thickness: ``level (1 - exp(-haadf / level))``.

    Linear (``haadf``) for thin specimens, approaching ``level`` for thick ones, as when
    electrons scatter more than once or outside the detector's annulus.
    """
    if level <= 0:
        raise EdxtomoInputError(f"the HAADF saturation level must be > 0, got {level}")
    return level * -np.expm1(-np.asarray(haadf, dtype=np.float64) / level)


def _centred_axes(shape, voxel_size_nm):
    """Voxel-centre coordinates (nm) from the volume centre, broadcastable ``z, y, x``."""
    axes = [(np.arange(n) - (n - 1) / 2) * voxel_size_nm for n in shape]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
