"""The tilt-axis rotation search: the in-plane rotation that makes the series most consistent.

Each candidate rotation is aligned (sequential registration and a short projection matching,
:func:`edxtomo.align.matching._align_at`) and scored by how well a SIRT reconstruction of
fixed effort reprojects onto the band-passed views. Parabolas through the best candidates and
their neighbours, then through finer candidates that start from the translations found nearest
the estimate, refine the rotation to a few hundredths of a degree on HAADF data. (Common
lines, the views' profiles along the axis, see the rotation only through features that move
across the axis; they misled on the etspy needle and the sQD1 series. Consistency sees both
directions.)
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm.auto import tqdm

from edxtomo.align.geometry import _derotate, _rotate_xy
from edxtomo.align.matching import _align_at, _filtered_residual, _project_match
from edxtomo.align.registration import RegistrationFailed, _Registration, _spectrum

log = logging.getLogger(__name__)

# Projection-matching updates per candidate while scanning the axis rotation.
SCAN_PM_ITERATIONS = 2
# At most this many local refinements of the rotation, each from the translations of the last.
LOCAL_ROUNDS = 4
# The consistency score reconstructs with this many times sirt_iterations.
CONSISTENCY_SIRT_ROUNDS = 3


def _consistency(
    stack: np.ndarray,
    angles_deg: np.ndarray,
    alpha_deg: float,
    q: np.ndarray,
    registered: np.ndarray,
    reg: _Registration,
) -> float:
    """Mean band-passed residual of a fixed-effort SIRT of the registered, aligned views.

    The same number of SIRT iterations for every candidate rotation, so the scores differ by
    how consistent the views are, not by how far the reconstruction converged.
    """
    from edxtomo.tomo import project, sirt

    views = _derotate(stack, alpha_deg, q)[registered]
    used = angles_deg[registered]
    volume = sirt(
        views, used, CONSISTENCY_SIRT_ROUNDS * reg.sirt_iterations, progress=False,
        log_every=CONSISTENCY_SIRT_ROUNDS * reg.sirt_iterations, device=reg.device,
    )
    reprojected = project(volume, used, device=reg.device)
    residual = _filtered_residual(
        np.stack([_spectrum(p, reg) for p in reprojected]),
        np.stack([_spectrum(v, reg) for v in views]),
    )
    return float(residual.mean())


def _parabola_vertex(alphas: np.ndarray, values: np.ndarray) -> float:
    """Abscissa of the vertex of the parabola through three points, clipped to their span."""
    (a0, a1, a2), (s0, s1, s2) = alphas, values
    num = (a1 - a0) ** 2 * (s1 - s2) - (a1 - a2) ** 2 * (s1 - s0)
    den = (a1 - a0) * (s1 - s2) - (a1 - a2) * (s1 - s0)
    if den == 0 or not np.isfinite(den):
        return float(alphas[np.argmin(values)])
    return float(np.clip(a1 - 0.5 * num / den, a0, a2))


def _scan_rotation(
    stack: np.ndarray,
    angles_deg: np.ndarray,
    reg: _Registration,
    search_deg: float,
    step_deg: float,
    progress: bool,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Axis rotation that makes the series most consistent.

    Each candidate rotation is aligned (sequential registration and a short projection
    matching) and scored by :func:`_consistency`. Candidates: a grid of ``step_deg`` over
    ``+-search_deg``; the two half steps beside the best; the parabola through the best and
    its neighbours gives an estimate. Then three candidates ``step_deg / 6`` apart around that
    estimate, each started from the translations of the best candidate so that they differ
    only by the rotation, give the answer by a last parabola.

    A candidate at which fewer than 2 views register (:class:`RegistrationFailed`) scores
    infinity; every other error (a device that does not exist, bad input to the
    reconstruction) propagates.

    Returns the rotation and the scanned rotations with their scores (sorted by rotation).

    Raises
    ------
    RegistrationFailed
        No candidate of the grid lets 2 or more views register.
    """
    scores: dict[float, float] = {}
    solutions: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def evaluate(alpha: float, start: tuple[np.ndarray, np.ndarray] | None = None) -> float:
        try:
            if start is None:
                q, correlation, _ = _align_at(
                    stack, angles_deg, alpha, reg, SCAN_PM_ITERATIONS
                )
            else:
                translations, correlation = start
                q, correlation, _ = _project_match(
                    stack, angles_deg, alpha, _rotate_xy(-alpha, translations), correlation,
                    reg, SCAN_PM_ITERATIONS, progress=False,
                )
        except RegistrationFailed as exc:
            log.debug("axis rotation %.3f deg: %s", alpha, exc)
            return np.inf
        registered = correlation >= reg.min_correlation
        solutions[alpha] = (_rotate_xy(alpha, q), correlation)
        value = _consistency(stack, angles_deg, alpha, q, registered, reg)
        log.debug("axis rotation %.3f deg: consistency residual %.6g", alpha, value)
        return value

    n_steps = max(int(np.ceil(search_deg / step_deg)), 1)
    grid = np.linspace(-search_deg, search_deg, 2 * n_steps + 1)
    half = (grid[1] - grid[0]) / 2
    for alpha in tqdm(grid, desc="axis rotation scan", unit="angle", disable=not progress):
        scores[float(alpha)] = evaluate(float(alpha))
    best = min(scores, key=scores.get)
    if not np.isfinite(scores[best]):
        raise RegistrationFailed(
            f"no axis rotation within +-{search_deg} deg lets 2 or more views register "
            f"(correlation threshold {reg.min_correlation:.3f}); check the reference channel"
        )
    if abs(best) >= search_deg:
        log.warning(
            "the best axis rotation (%.1f deg) is at the edge of the search range +-%.1f deg; "
            "increase axis_search_deg", best, search_deg,
        )
    for alpha in (best - half, best + half):
        scores[alpha] = evaluate(alpha)
    trio = np.array([best - half, best, best + half])
    estimate = _parabola_vertex(trio, np.array([scores[a] for a in trio]))
    fine = step_deg / 6
    start = solutions[best]
    for _ in range(LOCAL_ROUNDS):
        trio = estimate + np.array([-fine, 0.0, fine])
        local = np.array([evaluate(a, start) for a in trio])
        start = solutions.get(trio[1], start)
        previous, estimate = estimate, _parabola_vertex(trio, local)
        log.debug("axis rotation refined to %.3f deg", estimate)
        if abs(estimate - previous) < 0.05:
            break
    scanned = sorted(scores.items())
    return estimate, np.array([a for a, _ in scanned]), np.array([v for _, v in scanned])
