"""Placing drawn particles in the field: no overlaps, touching pairs, inside every projection.

:func:`build_specimen` draws the particles of a preset's ``specimen:``
(:func:`~edxtomo.simulate.phantoms.random_core_shell`,
:func:`~edxtomo.simulate.phantoms.random_spherocylinder`) and places them
(:func:`place_particles`); coordinates follow :mod:`edxtomo.simulate.phantoms`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError
from edxtomo.simulate.phantoms import (
    direction_zyx,
    outer_radius,
    random_core_shell,
    random_spherocylinder,
)

log = logging.getLogger(__name__)


def _fits(center, radius, half_extent_nm, tilt_max_rad, margin_nm) -> bool:
    """Whether a particle stays inside the volume and inside every projection."""
    z, y, x = np.abs(center)
    hz, hy, hx = half_extent_nm
    # Largest |u| = |x cos(t) + z sin(t)| over |t| <= tilt_max: sqrt(x^2 + z^2) when the
    # maximising angle atan2(z, x) lies in the range, else its value at the range end.
    if np.arctan2(z, x) <= tilt_max_rad:
        u_max = np.hypot(x, z)
    else:
        u_max = x * np.cos(tilt_max_rad) + z * np.sin(tilt_max_rad)
    return bool(
        z + radius <= hz - margin_nm
        and y + radius <= hy - margin_nm
        and u_max + radius <= hx - margin_nm
    )


def fibonacci_sphere(n: int = 2000) -> np.ndarray:
    """``n`` nearly uniform unit vectors ``(n, 3)`` (z, y, x)."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.pi * (1 + 5**0.5) * k
    rho = np.sqrt(1 - z**2)
    return np.stack([z, rho * np.sin(phi), rho * np.cos(phi)], axis=-1)


def max_outer_radius(particle: Mapping[str, Any]) -> float:
    """Largest centre-to-surface distance (nm), from 2000 directions plus 1 % for the gaps."""
    return 1.01 * float(outer_radius(particle, fibonacci_sphere()).max())


def place_particles(
    shapes: Sequence[dict[str, Any]],
    volume_shape: tuple[int, int, int],
    voxel_size_nm: float,
    *,
    touching_pairs: int = 0,
    z_spread_nm: float = 0.0,
    margin_nm: float = 0.0,
    tilt_max_deg: float = 90.0,
    rng: np.random.Generator,
    max_attempts: int = 500,
    max_restarts: int = 50,
) -> list[dict[str, Any]]:
    """Give each particle a position: no overlaps, some pairs touching, all in the field.

    Particles ``2k`` and ``2k+1`` (``k < touching_pairs``) touch: the second sits along a
    random, nearly in-plane direction ``n`` from the first at the distance
    ``outer_radius(first, n) + outer_radius(second, -n)``, so the two outer surfaces meet
    at one point on the line of centres. Any other two particles keep their enclosing
    spheres apart. Each particle stays ``margin_nm`` inside the volume faces and inside the
    edges of every projection up to ``tilt_max_deg``. Groups (a pair or a single particle)
    are placed one after the other at random; after ``max_attempts`` failures for one group
    the placement starts over, at most ``max_restarts`` times.

    Returns
    -------
    list of dict
        Copies of ``shapes`` with ``id`` (from 1), ``center_nm`` (centred coordinates,
        z, y, x, in nm), ``center_vox`` (voxel indices) and ``touching`` (ids).

    Raises
    ------
    EdxtomoInputError
        When the particles do not fit in the field.
    """
    half_extent = np.array(volume_shape) * voxel_size_nm / 2
    tilt_max = np.deg2rad(min(abs(tilt_max_deg), 90.0))
    radii = [max_outer_radius(p) for p in shapes]
    groups = [[2 * k, 2 * k + 1] for k in range(touching_pairs)]
    groups += [[k] for k in range(2 * touching_pairs, len(shapes))]

    def try_group(group, centers):
        first = np.array([
            rng.normal(0, z_spread_nm) if z_spread_nm > 0 else 0.0,
            rng.uniform(-half_extent[1], half_extent[1]),
            rng.uniform(-half_extent[2], half_extent[2]),
        ])
        new = [first]
        if len(group) == 2:
            n = direction_zyx(rng.uniform(-15, 15), rng.uniform(0, 360))
            dist = outer_radius(shapes[group[0]], n) + outer_radius(shapes[group[1]], -n)
            new.append(first + dist * n)
        for k, c in zip(group, new, strict=True):
            if not _fits(c, radii[k], half_extent, tilt_max, margin_nm):
                return None
            if any(np.linalg.norm(c - other) < radii[k] + radii[j]
                   for j, other in centers.items()):
                return None
        return dict(zip(group, new, strict=True))

    for _ in range(max_restarts):
        centers: dict[int, np.ndarray] = {}
        for group in groups:
            for _ in range(max_attempts):
                found = try_group(group, centers)
                if found is not None:
                    centers.update(found)
                    break
            else:
                break
        if len(centers) == len(shapes):
            break
    else:
        raise EdxtomoInputError(
            f"cannot place {len(shapes)} particles ({touching_pairs} touching pairs) in a "
            f"field of {volume_shape} voxels of {voxel_size_nm} nm with a {margin_nm} nm "
            "margin: enlarge the field or reduce the count, the sizes or the margin"
        )
    origin = (np.array(volume_shape) - 1) / 2
    particles = []
    for k, shape in enumerate(shapes):
        touching = [j + 1 for group in groups if k in group and len(group) == 2
                    for j in group if j != k]
        particles.append({"id": k + 1, **shape, "center_nm": centers[k].tolist(),
                          "center_vox": (centers[k] / voxel_size_nm + origin).tolist(),
                          "touching": touching})
    return particles


def build_specimen(
    specimen: Mapping[str, Any],
    volume_shape: tuple[int, int, int],
    voxel_size_nm: float,
    tilt_max_deg: float,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Draw and place the particles of a specimen description (the preset's ``specimen:``).

    ``kind`` is ``"quantum_dots"`` (core-shell particles, see :func:`random_core_shell`) or
    ``"nanorods"`` (spherocylinders, see :func:`random_spherocylinder`); ``count``,
    ``touching_pairs``, ``z_spread_nm`` and ``margin_nm`` go to :func:`place_particles`.
    """
    kind = specimen.get("kind")
    draw = {"quantum_dots": random_core_shell, "nanorods": random_spherocylinder}.get(kind)
    if draw is None:
        raise EdxtomoInputError(
            f"specimen.kind must be 'quantum_dots' or 'nanorods', got {kind!r}"
        )
    count = int(specimen["count"])
    touching = int(specimen.get("touching_pairs", 0))
    if count < 1 or 2 * touching > count:
        raise EdxtomoInputError(
            f"specimen: count={count} and touching_pairs={touching}: need count >= 1 and "
            "2 * touching_pairs <= count"
        )
    shapes = [draw(specimen, rng) for _ in range(count)]
    particles = place_particles(
        shapes, volume_shape, voxel_size_nm, touching_pairs=touching,
        z_spread_nm=float(specimen.get("z_spread_nm", 0.0)),
        margin_nm=float(specimen.get("margin_nm", 0.0)), tilt_max_deg=tilt_max_deg, rng=rng,
    )
    log.info("placed %d particles (%d touching pairs)", len(particles), touching)
    return particles
