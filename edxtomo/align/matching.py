"""Translations at a fixed axis rotation: sequential registration, gauge, projection matching.

Projection matching reconstructs the registered views (:func:`edxtomo.tomo.sirt`),
reprojects, re-registers every view against its reprojection and iterates until the updates
are below the registration resolution. It removes the random walk that sequential
registration leaves and works on EDX-only data.
"""

from __future__ import annotations

import logging

import numpy as np
from tqdm.auto import tqdm

from edxtomo.align.geometry import _derotate
from edxtomo.align.registration import (
    _check_registered,
    _fill_unregistered,
    _register,
    _Registration,
    _sequential,
    _spectrum,
)

log = logging.getLogger(__name__)


def _gauge(
    aligned: np.ndarray, angles_deg: np.ndarray, q: np.ndarray, registered: np.ndarray
) -> np.ndarray:
    """Fix what the data cannot: the specimen's x-z position and the mean y translation.

    The x centre of mass ``m_i`` of each aligned view (positive part) is fitted by
    ``x0 cos(theta) + z0 sin(theta)``, the track of a point at ``(x0, z0)``; adding that track
    to the x translations moves the specimen's centre of mass onto the axis. The y translation
    gets zero mean over the registered views.
    """
    x = np.arange(aligned.shape[2]) - (aligned.shape[2] - 1) / 2
    mass = np.clip(aligned, 0, None).sum(axis=1)
    total = mass.sum(axis=1)
    usable = registered & (total > 0)
    q = q.copy()
    if usable.sum() >= 2:
        com = (mass[usable] * x).sum(axis=1) / total[usable]
        theta = np.deg2rad(angles_deg)
        design = np.stack([np.cos(theta), np.sin(theta)], axis=1)
        coef, *_ = np.linalg.lstsq(design[usable], com, rcond=None)
        q[:, 0] += design @ coef
    q[:, 1] -= q[registered, 1].mean()
    return q


def _filtered_residual(reprojected: np.ndarray, views: np.ndarray) -> np.ndarray:
    """Per view ``||F(p) - F(v)|| / ||F(v)||`` from spectra, F the registration filter.

    Band-passing leaves out the smooth part of the misfit, which mostly measures how far SIRT
    has converged, and keeps the detail that misalignment makes inconsistent.
    """
    axes = (-2, -1)
    num = np.linalg.norm(reprojected - views, axis=axes)
    return num / np.maximum(np.linalg.norm(views, axis=axes), 1e-30)


def _project_match(
    stack: np.ndarray,
    angles_deg: np.ndarray,
    alpha_deg: float,
    q: np.ndarray,
    correlation: np.ndarray,
    reg: _Registration,
    iterations: int,
    progress: bool,
    log_level: int = logging.DEBUG,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projection matching: reconstruct, reproject, re-register each view, iterate.

    Each round reconstructs the registered views (``correlation >= min_correlation``) with the
    current translations, records the residual, registers every view against its reprojection
    and applies the update, unless all updates are below the registration resolution
    ``1 / upsample`` or ``iterations`` updates were made. The reconstruction of one round is
    refined by the next: ``sirt_iterations`` SIRT updates of the residual ``b - A x`` are added
    to ``x`` (then clipped at 0), so it keeps converging while the views move.

    A view left out of the reconstruction is compared with a reprojection that owes nothing to
    it, so its correlation is updated and it joins once it passes. A view inside the
    reconstruction is partly fitted by it (few views, underdetermined), so its correlation with
    the reprojection is not evidence and its neighbour correlation is kept.

    Returns
    -------
    q : ndarray, (n_tilt, 2)
        Translations in the axis frame, gauge fixed.
    correlation : ndarray, (n_tilt,)
    residual : ndarray, (n_round, n_tilt)
        Band-passed relative reprojection residual per round and view; the last row belongs
        to the returned translations.
    """
    from edxtomo.tomo import project, sirt

    options = {"progress": False, "log_every": reg.sirt_iterations, "device": reg.device}
    correlation = correlation.copy()
    volume = None
    history = []
    update = np.zeros_like(q)
    bar = tqdm(
        total=iterations + 1, desc="projection matching", unit="it", disable=not progress
    )
    with bar:
        for it in range(iterations + 1):
            registered = correlation >= reg.min_correlation
            views = _derotate(stack, alpha_deg, q)
            used = angles_deg[registered]
            if volume is None:
                volume = sirt(views[registered], used, reg.sirt_iterations, **options)
            else:
                misfit = views[registered] - project(volume, used, device=reg.device)
                volume += sirt(misfit, used, reg.sirt_iterations, nonneg=False, **options)
                np.clip(volume, 0, None, out=volume)
            reprojected = project(volume, angles_deg, device=reg.device)
            view_spectra = np.stack([_spectrum(v, reg) for v in views])
            model_spectra = np.stack([_spectrum(p, reg) for p in reprojected])
            history.append(_filtered_residual(model_spectra, view_spectra))
            for i in range(len(angles_deg)):
                update[i], match = _register(model_spectra[i], view_spectra[i], reg)
                if not registered[i]:
                    correlation[i] = match
            largest = float(np.abs(update[registered]).max())
            mean_residual = float(history[-1][registered].mean())
            bar.update()
            bar.set_postfix(residual=f"{mean_residual:.4g}", update=f"{largest:.3f}")
            log.log(
                log_level,
                "projection matching round %d: mean residual %.4g, largest update %.3f px",
                it + 1, mean_residual, largest,
            )
            if it == iterations or largest <= 1.0 / reg.upsample:
                break
            q = q - update
            registered = correlation >= reg.min_correlation
            q = _fill_unregistered(q, angles_deg, registered)
            q = _gauge(_derotate(stack, alpha_deg, q), angles_deg, q, registered)
    q = _fill_unregistered(q, angles_deg, correlation >= reg.min_correlation)
    return q, correlation, np.asarray(history)


def _align_at(
    stack: np.ndarray,
    angles_deg: np.ndarray,
    alpha_deg: float,
    reg: _Registration,
    pm_iterations: int,
    progress: bool = False,
    log_level: int = logging.DEBUG,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequential registration, gauge, then projection matching, for a fixed rotation.

    Returns the translations ``q`` (n_tilt, 2) in the axis frame, the correlations (n_tilt,)
    and the projection-matching residuals (n_round, n_tilt), empty without it.

    Raises
    ------
    RegistrationFailed
        Fewer than 2 views correlate with their neighbours.
    """
    q, correlation = _sequential(stack, angles_deg, alpha_deg, reg)
    registered = _check_registered(correlation, reg, stack.shape[1:])
    q = _fill_unregistered(q, angles_deg, registered)
    q = _gauge(_derotate(stack, alpha_deg, q), angles_deg, q, registered)
    residual = np.empty((0, len(angles_deg)))
    if pm_iterations > 0:
        q, correlation, residual = _project_match(
            stack, angles_deg, alpha_deg, q, correlation, reg, pm_iterations, progress,
            log_level,
        )
    return q, correlation, residual
