"""Core-shell quantum dots and nanorods: analytic shapes, their truth, and their voxelisation.

Directions
----------
A direction is given by the latitude ``theta`` (degrees, -90 to 90, from the x-y plane
towards +z) and the azimuth ``phi`` (degrees, from +x towards +y), with the unit vector in
volume axis order ``(z, y, x) = (sin theta, cos theta sin phi, cos theta cos phi)``.
:func:`edxtomo.thickness.shell_thickness` uses the same convention.

Particles
---------
A particle is a JSON-serialisable dict, so the truth written beside the simulated files
(``truth/particles.json``) is the very object the voxeliser used.

Core-shell particle (``kind = "core_shell"``)::

    {"id": 1, "kind": "core_shell",
     "center_nm": [z, y, x],        # centred coordinates: 0 is the volume centre
     "center_vox": [iz, iy, ix],    # voxel indices (fractional) of the same point
     "layers": [                    # from the centre outwards
        {"material": "InP",  "thickness": {...}, "missing_patches": []},
        {"material": "ZnSe", "thickness": {...}, "missing_patches": []},
        {"material": "ZnS",  "thickness": {...}, "missing_patches": [
            {"direction_zyx": [z, y, x], "half_angle_deg": 20.0}]}],
     "touching": [2]}               # ids of the particles it touches

The first layer is the core and its "thickness" is its radius. Each thickness is a
low-order spherical-harmonic expansion, ``t(n) = mean_nm + dipole_nm . n + n^T Q n`` with
``Q = quadrupole_nm`` symmetric and traceless (degrees 0, 1 and 2 in real form), so that
``mean_nm`` is exactly the area-weighted mean of ``t`` over the sphere. Inside a missing
patch (a spherical cap around ``direction_zyx``) the layer has zero thickness, so the next
layer starts where it would have. Layer ``k`` spans radii ``[b_k, b_{k+1}]`` with
``b_0 = 0`` and ``b_{k+1} = b_k + t_k(n)``.

Spherocylinder (``kind = "spherocylinder"``): a rod of ``material`` whose points lie within
``radius_nm`` of the segment of length ``length_nm`` through ``center_nm`` along
``axis_zyx``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError

log = logging.getLogger(__name__)

# Crystal data: cubic lattice constant (nm, room temperature), formula units per
# conventional cell, and the atoms of each element per formula unit. Zinc blende InP, ZnSe,
# ZnS (sphalerite) hold 4 formula units per cell, fcc Au 4 atoms.
CRYSTALS: dict[str, dict[str, Any]] = {
    "InP": {"lattice_nm": 0.58687, "units_per_cell": 4, "composition": {"In": 1, "P": 1}},
    "ZnSe": {"lattice_nm": 0.56676, "units_per_cell": 4, "composition": {"Zn": 1, "Se": 1}},
    "ZnS": {"lattice_nm": 0.54093, "units_per_cell": 4, "composition": {"Zn": 1, "S": 1}},
    "Au": {"lattice_nm": 0.40782, "units_per_cell": 4, "composition": {"Au": 1}},
}


def number_densities(material: str) -> dict[str, float]:
    """Atoms per nm^3 of each element of a crystalline material.

    Examples: InP 19.79 In and 19.79 P, ZnSe 21.97 Zn and Se, ZnS 25.27 Zn and S,
    Au 58.97 atoms/nm^3 (these reproduce the bulk mass densities 4.81, 5.27, 4.09 and
    19.3 g/cm^3).
    """
    try:
        crystal = CRYSTALS[material]
    except KeyError:
        raise EdxtomoInputError(
            f"unknown material {material!r}; known: {', '.join(CRYSTALS)}"
        ) from None
    units_per_nm3 = crystal["units_per_cell"] / crystal["lattice_nm"] ** 3
    return {el: n * units_per_nm3 for el, n in crystal["composition"].items()}


def particle_elements(particles: Sequence[Mapping[str, Any]]) -> list[str]:
    """Element symbols present in ``particles``, in order of first appearance (inside out)."""
    elements: list[str] = []
    for material in _materials(particles):
        for el in number_densities(material):
            if el not in elements:
                elements.append(el)
    return elements


def _materials(particles: Sequence[Mapping[str, Any]]) -> list[str]:
    materials: list[str] = []
    for particle in particles:
        names = ([layer["material"] for layer in particle["layers"]]
                 if particle["kind"] == "core_shell" else [particle["material"]])
        materials += [m for m in names if m not in materials]
    return materials


# --------------------------------------------------------------------------------------
# Directions and thickness functions
# --------------------------------------------------------------------------------------

def direction_zyx(theta_deg, phi_deg) -> np.ndarray:
    """Unit vectors ``(..., 3)`` in ``(z, y, x)`` order for latitude/azimuth in degrees."""
    theta = np.deg2rad(np.asarray(theta_deg, dtype=float))
    phi = np.deg2rad(np.asarray(phi_deg, dtype=float))
    theta, phi = np.broadcast_arrays(theta, phi)
    return np.stack(
        [np.sin(theta), np.cos(theta) * np.sin(phi), np.cos(theta) * np.cos(phi)], axis=-1
    )


def harmonic_thickness(params: Mapping[str, Any], directions: np.ndarray) -> np.ndarray:
    """Evaluate ``mean + dipole . n + n^T Q n`` (nm) at unit vectors ``(..., 3)`` (z, y, x)."""
    n = np.asarray(directions, dtype=float)
    value = np.full(n.shape[:-1], float(params["mean_nm"]))
    if "dipole_nm" in params:
        value = value + n @ np.asarray(params["dipole_nm"], dtype=float)
    if "quadrupole_nm" in params:
        q = np.asarray(params["quadrupole_nm"], dtype=float)
        value = value + np.einsum("...i,ij,...j->...", n, q, n)
    return value


def _in_patches(patches: Sequence[Mapping[str, Any]], directions: np.ndarray) -> np.ndarray:
    inside = np.zeros(directions.shape[:-1], dtype=bool)
    for patch in patches:
        axis = np.asarray(patch["direction_zyx"], dtype=float)
        axis = axis / np.linalg.norm(axis)
        inside |= directions @ axis >= np.cos(np.deg2rad(patch["half_angle_deg"]))
    return inside


def layer_boundaries(particle: Mapping[str, Any], directions: np.ndarray) -> np.ndarray:
    """Radii (nm) of the layer boundaries of a core-shell particle along unit vectors.

    Returns
    -------
    ndarray, shape (n_layers + 1, ...)
        ``b_0 = 0`` and ``b_{k+1} = b_k + t_k(n)``; a layer is 0 thick inside its patches.
    """
    _require_core_shell(particle)
    directions = np.asarray(directions, dtype=float)
    bounds = [np.zeros(directions.shape[:-1])]
    for layer in particle["layers"]:
        t = np.maximum(harmonic_thickness(layer["thickness"], directions), 0.0)
        t = np.where(_in_patches(layer.get("missing_patches", []), directions), 0.0, t)
        bounds.append(bounds[-1] + t)
    return np.stack(bounds)


def _require_core_shell(particle: Mapping[str, Any]) -> None:
    if particle.get("kind") != "core_shell":
        raise EdxtomoInputError(
            f"particle {particle.get('id')} is a {particle.get('kind')!r}; shell thickness is "
            "defined for core_shell particles only"
        )


def _layer_span(particle: Mapping[str, Any], shell: str) -> tuple[int, int]:
    """First and last layer index that ``shell`` (a material or an element) covers."""
    materials = [layer["material"] for layer in particle["layers"]]
    if shell in materials:
        k = materials.index(shell)
        return k, k
    covering = [k for k, m in enumerate(materials) if shell in number_densities(m)]
    if not covering:
        raise EdxtomoInputError(
            f"particle {particle.get('id')} has no layer {shell!r}: layers are {materials}"
        )
    return covering[0], covering[-1]


def true_shell_radii(
    particle: Mapping[str, Any], shell: str, theta_deg, phi_deg
) -> tuple[np.ndarray, np.ndarray]:
    """Inner and outer radius (nm) of a shell along the given directions.

    Parameters
    ----------
    particle : dict
        A ``core_shell`` particle (see the module docstring).
    shell : str
        A layer material (``"InP"``, ``"ZnSe"``, ``"ZnS"``) or an element symbol, which
        covers every layer that contains it (``"Zn"`` spans ZnSe and ZnS, ``"In"`` the
        core from radius 0).
    theta_deg, phi_deg : array_like
        Latitude and azimuth in degrees (broadcast together).

    Returns
    -------
    inner_nm, outer_nm : ndarray
        Shape of the broadcast angles. Where the shell is missing they are equal.
    """
    _require_core_shell(particle)
    first, last = _layer_span(particle, shell)
    bounds = layer_boundaries(particle, direction_zyx(theta_deg, phi_deg))
    return bounds[first], bounds[last + 1]


def true_shell_thickness(particle: Mapping[str, Any], shell: str, theta_deg, phi_deg):
    """Radial thickness (nm) of a shell along the given directions.

    The thickness is the length of the ray from the particle centre inside the layers of
    ``shell`` (see :func:`true_shell_radii`); 0 inside a missing patch. For the core
    (``"InP"``, ``"In"``, ``"P"``) it is the core radius.

    Parameters
    ----------
    particle : dict
        A ``core_shell`` particle.
    shell : str
        Layer material or element symbol.
    theta_deg, phi_deg : array_like
        Latitude in [-90, 90] and azimuth in degrees; direction
        ``(z, y, x) = (sin theta, cos theta sin phi, cos theta cos phi)``.

    Returns
    -------
    ndarray or float
        Thickness in nm, with the broadcast shape of the angles.
    """
    inner, outer = true_shell_radii(particle, shell, theta_deg, phi_deg)
    return outer - inner


def random_harmonic_thickness(
    mean_nm: float, anisotropy: float, rng: np.random.Generator
) -> dict[str, Any]:
    """A random smooth thickness function with a given mean and maximum relative deviation.

    The dipole and the traceless quadrupole are drawn in random orientations, and scaled so
    that ``|t(n) - mean| <= anisotropy * mean`` everywhere (the bound is
    ``|dipole| + max|eig(Q)|``), with the full deviation budget used between 60 and 100 %.
    """
    if not 0 <= anisotropy < 1:
        raise EdxtomoInputError(f"shell anisotropy must be in [0, 1), got {anisotropy}")
    budget = anisotropy * mean_nm * rng.uniform(0.6, 1.0)
    dipole_share = rng.uniform(0.2, 0.8)
    dipole = rng.normal(size=3)
    dipole *= dipole_share * budget / np.linalg.norm(dipole)
    a = rng.normal(size=(3, 3))
    q = (a + a.T) / 2
    q -= np.eye(3) * np.trace(q) / 3
    q *= (1 - dipole_share) * budget / np.abs(np.linalg.eigvalsh(q)).max()
    return {"mean_nm": float(mean_nm), "dipole_nm": dipole.tolist(), "quadrupole_nm": q.tolist()}


def random_direction(rng: np.random.Generator) -> np.ndarray:
    """A unit vector ``(z, y, x)`` uniformly distributed on the sphere."""
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------------------
# Random particles and their extent
# --------------------------------------------------------------------------------------

def _draw(value, rng: np.random.Generator, name: str) -> float:
    """A number from ``value``: a constant, or ``[mean, sd]`` drawn from a normal law."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Sequence) and len(value) == 2:
        mean, sd = (float(v) for v in value)
        return float(max(rng.normal(mean, sd), 0.3 * mean))
    raise EdxtomoInputError(f"{name}: expected a number or [mean, sd], got {value!r}")


def _draw_count(value, rng: np.random.Generator, name: str) -> int:
    """An integer from ``value``: a constant, or ``[min, max]`` drawn uniformly."""
    if isinstance(value, int):
        return value
    if isinstance(value, Sequence) and len(value) == 2:
        return int(rng.integers(int(value[0]), int(value[1]) + 1))
    raise EdxtomoInputError(f"{name}: expected an integer or [min, max], got {value!r}")


def random_core_shell(spec: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Draw one core-shell particle (without position) from a specimen description.

    ``spec`` holds ``core`` (``material``, ``radius_nm``) and ``shells`` (a list of
    ``material``, ``thickness_nm``, ``anisotropy``, ``missing_patches``,
    ``patch_half_angle_deg``); see ``resources/specimens/qd_demo.yaml``.
    """
    core = spec["core"]
    layers = [{
        "material": core["material"],
        "thickness": {"mean_nm": _draw(core["radius_nm"], rng, "core.radius_nm")},
        "missing_patches": [],
    }]
    for k, shell in enumerate(spec["shells"]):
        where = f"shells[{k}]"
        mean = _draw(shell["thickness_nm"], rng, f"{where}.thickness_nm")
        n_patches = _draw_count(shell.get("missing_patches", 0), rng, f"{where}.missing_patches")
        lo, hi = shell.get("patch_half_angle_deg", [15.0, 30.0])
        patches = [
            {"direction_zyx": random_direction(rng).tolist(),
             "half_angle_deg": float(rng.uniform(lo, hi))}
            for _ in range(n_patches)
        ]
        layers.append({
            "material": shell["material"],
            "thickness": random_harmonic_thickness(mean, shell.get("anisotropy", 0.0), rng),
            "missing_patches": patches,
        })
    return {"kind": "core_shell", "layers": layers}


def random_spherocylinder(spec: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """Draw one rod (without position): ``material``, ``length_nm``, ``radius_nm``, and an
    axis in a random in-plane direction tilted out of the x-y plane by up to
    ``axis_out_of_plane_deg``."""
    azimuth = rng.uniform(0, 360)
    elevation = rng.uniform(-1, 1) * spec.get("axis_out_of_plane_deg", 0.0)
    return {
        "kind": "spherocylinder",
        "material": spec["material"],
        "length_nm": _draw(spec["length_nm"], rng, "length_nm"),
        "radius_nm": _draw(spec["radius_nm"], rng, "radius_nm"),
        "axis_zyx": direction_zyx(elevation, azimuth).tolist(),
    }


def outer_radius(particle: Mapping[str, Any], directions: np.ndarray) -> np.ndarray:
    """Distance (nm) from the centre to the particle surface along unit vectors ``(..., 3)``."""
    if particle["kind"] == "core_shell":
        return layer_boundaries(particle, directions)[-1]
    # Ray from the centre of a spherocylinder: solve |p - clamp(p.a) a| = r for p = s n.
    a = np.asarray(particle["axis_zyx"], dtype=float)
    half, r = particle["length_nm"] / 2, particle["radius_nm"]
    cos = np.abs(np.asarray(directions) @ a)
    sin = np.sqrt(np.maximum(1 - cos**2, 0.0))
    side = np.where(sin > 1e-12, r / np.maximum(sin, 1e-12), np.inf)
    cap = half * cos + np.sqrt(np.maximum(r**2 - (half * sin) ** 2, 0.0))
    return np.where(side * cos <= half, side, cap)


def bounding_radius(particle: Mapping[str, Any]) -> float:
    """Radius (nm) of a sphere about the centre that contains the whole particle."""
    if particle["kind"] == "spherocylinder":
        return particle["length_nm"] / 2 + particle["radius_nm"]
    bound = 0.0
    for layer in particle["layers"]:
        t = layer["thickness"]
        q = np.asarray(t.get("quadrupole_nm", np.zeros((3, 3))))
        bound += (t["mean_nm"] + np.linalg.norm(t.get("dipole_nm", [0, 0, 0]))
                  + np.abs(np.linalg.eigvalsh(q)).max())
    return float(bound)


# --------------------------------------------------------------------------------------
# Voxelisation
# --------------------------------------------------------------------------------------

def _material_index(particle: Mapping[str, Any], points_nm: np.ndarray,
                    materials: list[str]) -> np.ndarray:
    """Index into ``materials`` of the material at each point (relative to the centre), -1
    outside. ``points_nm`` is ``(..., 3)`` in (z, y, x)."""
    r = np.linalg.norm(points_nm, axis=-1)
    if particle["kind"] == "spherocylinder":
        a = np.asarray(particle["axis_zyx"], dtype=float)
        along = np.clip(points_nm @ a, -particle["length_nm"] / 2, particle["length_nm"] / 2)
        inside = np.linalg.norm(points_nm - along[..., None] * a, axis=-1) <= particle["radius_nm"]
        return np.where(inside, materials.index(particle["material"]), -1)
    n = points_nm / np.maximum(r, 1e-12)[..., None]
    bounds = layer_boundaries(particle, n)
    index = np.full(r.shape, -1)
    for k, layer in reversed(list(enumerate(particle["layers"]))):
        index = np.where(r < bounds[k + 1], materials.index(layer["material"]), index)
    return index


def voxelize(
    particles: Sequence[Mapping[str, Any]],
    volume_shape: tuple[int, int, int],
    voxel_size_nm: float,
    supersample: int = 3,
) -> dict[str, np.ndarray]:
    """Element number densities (atoms/nm^3) of the particles on a voxel grid.

    Each voxel is sampled at ``supersample**3`` sub-voxel points, so the value at an
    interface is the partial-volume mix of the two materials (anti-aliased edges). Where
    bounding boxes of touching particles share a voxel, the material fractions are rescaled
    so that they never fill more than the voxel.

    Parameters
    ----------
    particles : sequence of dict
        Placed particles (see :func:`place_particles`).
    volume_shape : (nz, ny, nx)
    voxel_size_nm : float
    supersample : int
        Sub-voxel samples per axis (1 disables anti-aliasing).

    Returns
    -------
    dict of str to ndarray
        One float32 ``(nz, ny, nx)`` volume per element, in atoms/nm^3.
    """
    materials = _materials(particles)
    fractions = np.zeros((len(materials), *volume_shape), dtype=np.float32)
    s = int(supersample)
    sub = (np.arange(s) + 0.5) / s - 0.5  # sub-voxel offsets in voxel units
    for particle in particles:
        center = np.asarray(particle["center_vox"])
        reach = bounding_radius(particle) / voxel_size_nm + 1
        lo = np.maximum(np.floor(center - reach).astype(int), 0)
        hi = np.minimum(np.ceil(center + reach).astype(int) + 1, volume_shape)
        if np.any(hi <= lo):
            continue
        y_nm, x_nm = (((np.arange(a, b)[:, None] + sub).ravel() - c) * voxel_size_nm
                      for a, b, c in zip(lo[1:], hi[1:], center[1:], strict=True))
        box_yx = (slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        shape = [s, hi[1] - lo[1], s, hi[2] - lo[2], s]
        for iz in range(lo[0], hi[0]):  # one voxel plane at a time bounds the memory
            z_nm = (iz + sub - center[0]) * voxel_size_nm
            points = np.stack(np.meshgrid(z_nm, y_nm, x_nm, indexing="ij"), axis=-1)
            index = _material_index(particle, points, materials).reshape(shape)
            for m in range(len(materials)):
                fractions[(m, iz, *box_yx)] += (index == m).mean(axis=(0, 2, 4))
    total = fractions.sum(axis=0)
    fractions /= np.maximum(total, 1.0)
    densities: dict[str, np.ndarray] = {}
    for m, material in enumerate(materials):
        for el, rho in number_densities(material).items():
            densities.setdefault(el, np.zeros(volume_shape, dtype=np.float32))
            densities[el] += np.float32(rho) * fractions[m]
    return densities
