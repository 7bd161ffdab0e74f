"""Fused HAADF + EDX reconstruction: all element volumes at once, the HAADF as a Z^gamma sum.

Objective, over non-negative element volumes ``c_e`` (counts per voxel length, as
:func:`edxtomo.tomo.tv.tv_kl`) and a non-negative residual volume ``r`` (HAADF units)::

    sum_e KL(y_e, A c_e + bg_e) + w_e TV(c_e)
    + 1/2 || f_L^-1(h - b_t) - A (sum_e a_e u c_e + r) ||^2_(lambda_H f_L'^2) + rho ||r||_1

with ``a_e = s Z_e^gamma / k_e``: ``k_e`` is the element's X-ray sensitivity (counts per
atom, relative; Cliff-Lorimer 1/k-factors), ``s`` the HAADF scale, ``b_t`` an offset per
tilt (the support film's projected thickness changes with the tilt) and ``gamma`` the
HAADF Z exponent (Schwartz et al., Nat. Commun. 15, 3555, 2024). ``f_L`` is the HAADF's
saturation with thickness (identity when the data show none), inverted on the measurement,
whose weight per pixel falls with the slope of ``f_L`` (the noise it amplifies). ``u`` in
[0, 1] is the X-ray support (:func:`xray_support`): the visual hull of the counts. Outside
it the elements add nothing to the model's HAADF, so HAADF signal there (a gold marker, a
film beside the particles) goes into ``r`` and pulls no element mass in.

Steps:

1. :func:`edxtomo.tomo.haadf_model.fit_haadf_model` -- ``gamma`` (a grid over the prior
   range), ``L``, ``s`` and ``b_t`` from the raw data.
2. ``lambda_H = m / sigma_h^2`` with ``sigma_h^2`` the per-pixel misfit variance of that
   fit. The multiplier ``m`` is chosen on count halves (binomial split): reconstruct from
   half A at each candidate ``m`` (``0`` is TV-KL, fusion off), score the Poisson deviance
   of half B, on the band of y rows with the most counts (as the TV weight searches: on
   the demo the same choice as every row, in a fifth of the time).
3. :func:`fused_pdhg` -- the diagonally preconditioned PDHG of :mod:`edxtomo.tomo.tv`
   with the HAADF row, whitened by ``sqrt(lambda_H)``, added to ``K``, batched over the
   elements.

The residual's cost ``rho`` is set against the cheapest way an element explains HAADF
signal where no X-rays are counted: an element's KL gradient is at most ``n_tilt`` per
count, ``n_tilt / max_e a_e`` per HAADF unit, so ``rho = residual_cost * n_tilt /
max_e a_e``. With ``residual_cost < 1`` material seen only by the HAADF goes to ``r``; an
element there grows only while its KL gradient, ``A^T(1 - y / (A c + bg))``, stays below
``residual_cost * n_tilt``: to about ``residual_cost`` times the background counts. That
bound holds only where every ray through the voxel misses the particles: on a ray that also
crosses them the KL gradient is about 0, and with the cost alone 2.7% of the element mass
sat in an Au marker (``bench/README.md``). The support ``u`` closes that gap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from tqdm.auto import tqdm

from edxtomo.errors import EdxtomoInputError
from edxtomo.tomo.counts import count_groups
from edxtomo.tomo.device import resolve_device
from edxtomo.tomo.grid_search import BAND_ROWS, signal_band
from edxtomo.tomo.haadf_model import HaadfModel, fit_haadf_model
from edxtomo.tomo.operators import gradient, gradient_adjoint, kl_divergence, total_variation
from edxtomo.tomo.projector import Projector

log = logging.getLogger(__name__)

_EPS = 1e-12


@dataclass(frozen=True)
class FusedResult:
    """Output of :func:`fused_reconstruct`.

    Attributes
    ----------
    volumes : ndarray, shape (n_element, nz, ny, nx), float32
        Element volumes in counts per voxel length.
    residual : ndarray, shape (nz, ny, nx), float32
        HAADF signal of material the X-ray maps do not list (HAADF units per voxel length).
    model : HaadfModel
    haadf_weight : float
        The multiplier ``m`` of ``1 / sigma_h^2`` used (0: fusion off).
    explained_share, residual_share : float
        Shares of the HAADF above the offsets that the elements and the residual reproject.
    support : ndarray, shape (nz, ny, nx), float32
        Where the elements' HAADF counts (:func:`xray_support`; 1 everywhere for maps
        without Poisson noise).
    """

    volumes: np.ndarray
    residual: np.ndarray
    model: HaadfModel
    haadf_weight: float
    explained_share: float
    residual_share: float
    support: np.ndarray

    def haadf_volume(self) -> np.ndarray:
        """The model's HAADF volume ``s sum_e Z_e^gamma c_e / k_e + r`` (elements inside
        the X-ray support), ``(nz, ny, nx)``."""
        elements = np.tensordot(self.model.coefficients, self.volumes, axes=1) * self.support
        return (elements + self.residual).astype(np.float32)


def fused_pdhg(
    counts: np.ndarray,
    background: np.ndarray,
    haadf: np.ndarray,
    angles_deg: np.ndarray,
    model: HaadfModel,
    weight: Sequence[float],
    haadf_weight: float,
    residual_cost: float = 0.5,
    iterations: int = 150,
    *,
    support: np.ndarray | None = None,
    nz: int | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the fused objective for a fixed HAADF model (preconditioned PDHG).

    Parameters
    ----------
    counts, background : ndarray, shape (n_element, n_tilt, ny, nx)
        Gross counts ``y_e`` and the expected background ``bg_e`` under each line.
    haadf : ndarray, shape (n_tilt, ny, nx)
    angles_deg : ndarray, shape (n_tilt,)
    model : HaadfModel
        ``a_e`` (``model.coefficients``), ``b_t`` and ``sigma_h``.
    weight : sequence of float, length n_element
        TV weight of each element (dose independent, as in :func:`~edxtomo.tomo.tv.tv_kl`).
    haadf_weight : float
        ``m`` in ``lambda_H = m / sigma_h^2``; 0 gives TV-KL.
    residual_cost : float
        ``rho`` relative to the cheapest element explaining HAADF where no X-rays are counted.
    iterations : int
    support : ndarray, shape (nz, ny, nx), optional
        Where the elements' HAADF counts, in [0, 1] (:func:`xray_support`); default 1
        everywhere.
    nz : int, optional
        Volume depth in voxels; default ``nx``.
    device : str or torch.device
    progress : bool

    Returns
    -------
    volumes : ndarray, shape (n_element, nz, ny, nx), float32
        Element volumes, counts per voxel length.
    residual : ndarray, shape (nz, ny, nx), float32
        Residual volume, HAADF units per voxel length.
    """
    dev = resolve_device(device)
    n_el, n_tilt, ny, nx = counts.shape
    op = Projector(angles_deg, nx, nz=nz, device=dev)
    nz = op.nz

    def tensor(a):
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=dev)

    y, bg = tensor(counts), tensor(background)
    signal, precision = model.linearise(haadf)
    g = tensor(signal)[None]
    w = tensor(weight).clamp_min(1e-8).view(n_el, 1, 1, 1)
    fused_on = haadf_weight > 0
    # lambda_H per pixel: the saturation's inverse slope amplifies the HAADF noise
    lam = tensor(precision)[None] * (haadf_weight / model.noise_sigma**2)
    # HAADF units per count of each element, in each voxel: 0 outside the X-ray support
    seen = torch.ones((1, nz, ny, nx), device=dev) if support is None else tensor(support)[None]
    a = tensor(model.coefficients).view(n_el, 1, 1, 1) * seen * fused_on
    # the residual is solved as r = a_max r', in the units of the element with the most
    # HAADF per count, so that the preconditioned steps move it as fast as that element
    a_max = float(model.coefficients.max())
    rho = residual_cost * n_tilt

    # Pock-Chambolle preconditioners (alpha = 1) of K = [A c_e; sqrt(lambda_H) A(sum a_e c_e
    # + r); w grad] (a_e <= its maximum over voxels in the HAADF row's sum). The HAADF row is
    # whitened (its misfit in units of its noise). In HAADF units its column sums, a_e = 3-320
    # times the KL row's, shortened every element's step by that factor: on denoised maps
    # (deep's step b, sigma_h 74) 200 iterations left the objective at 1.65x its minimum and
    # the In core 5% low, which cost the final volumes 1.3 dB on In (issue 14); whitened,
    # 1.11x. On raw counts both reach the same objective (within 1% at 400 iterations).
    root = lam.sqrt()
    row = op.forward(torch.ones((1, nz, ny, nx), device=dev))
    col = op.adjoint(torch.ones((1, n_tilt, ny, nx), device=dev))
    col_h = op.adjoint(root)
    sigma_y = 1.0 / row.clamp_min(_EPS)
    sigma_h = 1.0 / (root * row * (float(model.coefficients.sum()) + a_max)).clamp_min(_EPS)
    tau_c = 1.0 / (col + a * col_h + 6.0 * w)
    tau_r = 1.0 / (a_max * col_h).clamp_min(_EPS)

    mass = (y - bg).clamp_min(0).flatten(1).sum(dim=1)
    c = (mass / row.sum().clamp_min(_EPS)).view(n_el, 1, 1, 1).expand(n_el, nz, ny, nx).clone()
    r = torch.zeros((1, nz, ny, nx), device=dev)

    def project_model(c, r):
        """``[A c_e; A(sum_e a_e c_e + a_max r)]``, ``(n_element + 1, n_tilt, ny, nx)``."""
        return op.forward(torch.cat([c, (a * c).sum(dim=0, keepdim=True) + a_max * r]))

    ax = project_model(c, r)
    c_bar, ax_bar = c, ax
    p_y, p_h = torch.zeros_like(y), torch.zeros_like(g)
    q = torch.zeros((n_el, 3, nz, ny, nx), device=dev)

    bar = tqdm(range(iterations), desc="PDHG fused", disable=not progress, mininterval=1.0)
    with torch.no_grad():
        for it in bar:
            v = p_y + sigma_y * (ax_bar[:n_el] + bg)
            p_y = 0.5 * (v + 1.0 - torch.sqrt((v - 1.0) ** 2 + 4.0 * sigma_y * y))
            q = q + 0.5 * gradient(c_bar)
            q = q / q.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(1.0)
            if fused_on:
                p_h = (p_h + sigma_h * root * (ax_bar[n_el:] - g)) / (1.0 + sigma_h)
            back = op.adjoint(torch.cat([p_y, root * p_h]))
            c_new = (c - tau_c * (back[:n_el] + a * back[n_el:] + w * gradient_adjoint(q)))
            c_new = c_new.clamp_min(0)
            r_new = (r - tau_r * (a_max * back[n_el:] + rho)).clamp_min(0) if fused_on else r
            ax_new = project_model(c_new, r_new)
            c_bar, ax_bar = 2 * c_new - c, 2 * ax_new - ax
            c, r, ax = c_new, r_new, ax_new
            if it % 10 == 0 or it == iterations - 1:
                obj = _objective(ax, y, bg, g, c, r, w, lam, rho)
                if not np.isfinite(obj):
                    raise FloatingPointError(f"fused PDHG objective non-finite at iteration {it}")
                bar.set_postfix(objective=f"{obj:.5g}")
    log.info("fused PDHG: %d iterations, m=%.3g, objective %.6g", iterations, haadf_weight,
             _objective(ax, y, bg, g, c, r, w, lam, rho))
    return c.cpu().numpy().astype(np.float32), (a_max * r[0]).cpu().numpy().astype(np.float32)


def _objective(ax, y, bg, g, c, r, w, lam, rho) -> float:
    n_el = c.shape[0]
    value = kl_divergence(ax[:n_el] + bg, y).sum() + (w.flatten() * total_variation(c)).sum()
    # 0 with fusion off (lam 0, r 0)
    value = value + 0.5 * (lam * (ax[n_el:] - g).pow(2)).sum() + rho * r.sum()
    return float(value)


def split_counts(counts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Binomial split of counts into two independent halves (each Poisson at half the dose)."""
    counts = np.asarray(counts)
    if np.any(counts < 0) or not np.allclose(counts, np.round(counts)):
        raise EdxtomoInputError("choosing the HAADF weight from count halves needs integer "
                                "counts >= 0; give fused.haadf_weight a number for float maps")
    half_a, half_b = count_groups(np.round(counts).astype(np.int64), 2, rng)
    return half_a.astype(np.float32), half_b.astype(np.float32)


def held_out_deviance(volumes: np.ndarray, counts: np.ndarray, background: np.ndarray,
                      angles_deg: np.ndarray, device: str | torch.device = "auto") -> float:
    """Poisson deviance of held-out counts ``(n_element, n_tilt, ny, nx)`` under
    reprojected volumes ``(n_element, nz, ny, nx)`` plus the background."""
    dev = resolve_device(device)
    op = Projector(angles_deg, volumes.shape[-1], nz=volumes.shape[1], device=dev)
    with torch.no_grad():
        model = op.forward(torch.as_tensor(volumes, device=dev))
        model = model + torch.as_tensor(background, dtype=torch.float32, device=dev)
        return float(kl_divergence(model, torch.as_tensor(counts, dtype=torch.float32,
                                                          device=dev)).sum())


HAADF_WEIGHTS = (0.0, 0.03, 1.0)
"""Candidates of ``m`` for ``haadf_weight="auto"``: off, weak, the HAADF's own likelihood.

Measured on the qd_demo specimen (64^3, 7 tilts): held-out deviance and PSNR change little
between ``m = 0.01`` and ``100`` and a lot between 0 and 0.01 (``bench/README.md``)."""


def fused_reconstruct(
    counts: np.ndarray,
    background: np.ndarray,
    haadf: np.ndarray,
    angles_deg: np.ndarray,
    atomic_numbers: Sequence[float],
    sensitivity: Sequence[float],
    weight: Sequence[float],
    *,
    haadf_weight: float | str = "auto",
    gamma_range: tuple[float, float] = (1.6, 1.8),
    residual_cost: float = 0.5,
    iterations: int = 150,
    seed: int = 0,
    halves: tuple[np.ndarray, np.ndarray] | None = None,
    count_noise: bool = True,
    nz: int | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> FusedResult:
    """Fused HAADF + EDX reconstruction with the HAADF model and its weight from the data.

    Parameters
    ----------
    counts, background : ndarray, shape (n_element, n_tilt, ny, nx)
        Gross counts (>= 0) and the expected background under each line.
    haadf : ndarray, shape (n_tilt, ny, nx)
        Aligned HAADF projections.
    angles_deg : ndarray, shape (n_tilt,)
    atomic_numbers, sensitivity, weight : sequence of float, length n_element
        ``Z_e``, relative X-ray sensitivity ``k_e`` (counts per atom) and TV weight.
    haadf_weight : float or "auto"
        ``m`` in ``lambda_H = m / sigma_h^2``; ``"auto"`` picks from :data:`HAADF_WEIGHTS`
        the one whose reconstruction from half of the counts best predicts the other half.
    gamma_range : (float, float)
        Prior range of the HAADF Z exponent.
    residual_cost : float
        Cost of the residual volume (see the module notes), in (0, 1) to keep unlisted
        material out of the elements.
    iterations : int
        PDHG iterations of each reconstruction.
    seed : int
        Seed of the count split.
    halves : (ndarray, ndarray), optional
        For ``"auto"``: two independent halves of the counts, each ``(n_element, n_tilt,
        ny, nx)`` (split before alignment, as integers, then aligned); default: the
        binomial split of ``counts`` (integers) here.
    count_noise : bool
        ``counts`` are Poisson counts; False for float maps in count units with far less
        noise (denoised), which the HAADF model fit then takes as exact
        (:func:`~edxtomo.tomo.haadf_model.fit_haadf_model`).
    nz : int, optional
    device : str or torch.device
    progress : bool

    Returns
    -------
    FusedResult
    """
    counts = np.asarray(counts, dtype=np.float32)
    background = np.asarray(background, dtype=np.float32)
    haadf = np.asarray(haadf, dtype=np.float32)
    if counts.ndim != 4 or background.shape != counts.shape:
        raise EdxtomoInputError(f"counts {counts.shape} and background {background.shape} must "
                                "both be (n_element, n_tilt, ny, nx)")
    if haadf.shape != counts.shape[1:]:
        raise EdxtomoInputError(f"HAADF {haadf.shape} does not match the X-ray maps "
                                f"{counts.shape[1:]}")
    model = fit_haadf_model(counts, background, haadf, atomic_numbers, sensitivity,
                            gamma_range, count_noise=count_noise)
    common = {"residual_cost": residual_cost, "iterations": iterations, "nz": nz,
              "device": device, "progress": progress}
    if haadf_weight == "auto":
        if halves is None:
            halves = split_counts(counts, np.random.default_rng(seed))
        haadf_weight = _choose_haadf_weight(halves, background, haadf, angles_deg, model,
                                            weight, count_noise, common)
    support = _support(counts, background, angles_deg, count_noise, nz, device)
    volumes, residual = fused_pdhg(counts, background, haadf, angles_deg, model, weight,
                                   float(haadf_weight), support=support, **common)
    explained, residual_share = _shares(volumes * support, residual, haadf, angles_deg, model,
                                        device)
    log.info("fused: gamma %.2f +- %.2f, scale %.4g, offset %.4g (mean over tilts), HAADF "
             "weight m=%g, HAADF explained by the elements %.1f%%, by the residual %.1f%%; "
             "X-ray support %.1f%% of the volume",
             model.gamma, model.gamma_sd, model.scale, float(model.offset.mean()),
             haadf_weight, 100 * explained, 100 * residual_share, 100 * float(support.mean()))
    return FusedResult(volumes, residual, model, float(haadf_weight), explained, residual_share,
                       support)


SUPPORT_WINDOW_PX = 7
"""Side of the pixel window in which :func:`xray_support` tests for X-ray counts.

Measured on the qd_demo dots (48^3, 7 tilts, 1000 counts per element and tilt): a 3 px
window left 10% of Zn's and 16% of S's true mass (the thin outer shell) outside the support,
5 px 0.5%, 7 px none; the support grew from 12% to 18% and 24% of the volume."""
SUPPORT_FALSE_ALARM = 1e-3
"""Chance that a window of background alone passes :func:`xray_support`'s test."""


def xray_support(counts: np.ndarray, background: np.ndarray, angles_deg: np.ndarray,
                 nz: int | None = None, device: str | torch.device = "auto") -> np.ndarray:
    """Voxels whose ray holds X-ray counts above the background at every tilt.

    The counts of all elements are summed over :data:`SUPPORT_WINDOW_PX`-wide windows; a
    window counts as seen where that sum exceeds the ``1 - SUPPORT_FALSE_ALARM`` quantile of
    the Poisson background. A voxel's support is 1 minus the number of tilts whose ray
    through it is unseen (back-projected, so partial at the edges), clipped to [0, 1]: the
    visual hull of the X-ray signal. Material the HAADF sees and the X-ray maps do not
    (a gold marker, a film beside the particles) lies outside it.

    Parameters
    ----------
    counts, background : ndarray, shape (n_element, n_tilt, ny, nx)
        Gross counts and the expected background under each line.
    angles_deg : ndarray, shape (n_tilt,)
    nz : int, optional
    device : str or torch.device

    Returns
    -------
    ndarray, shape (nz, ny, nx), float32
        Support weight in [0, 1].
    """
    # imported here: scipy.stats takes a second to import, and only method fused needs it
    from scipy.stats import poisson

    size = (1, SUPPORT_WINDOW_PX, SUPPORT_WINDOW_PX)
    area = SUPPORT_WINDOW_PX**2
    gross = uniform_filter(np.sum(counts, axis=0, dtype=np.float64), size, mode="constant")
    expected = uniform_filter(np.sum(background, axis=0, dtype=np.float64), size,
                              mode="constant")
    unseen = area * gross <= poisson.isf(SUPPORT_FALSE_ALARM, area * expected)
    dev = resolve_device(device)
    op = Projector(angles_deg, counts.shape[-1], nz=nz, device=dev)
    with torch.no_grad():
        missed = op.adjoint(torch.as_tensor(unseen[None], dtype=torch.float32, device=dev))
        col = op.adjoint(torch.ones((1, *unseen.shape), device=dev))
    support = 1.0 - len(angles_deg) * missed / col.clamp_min(_EPS)
    return support[0].clamp(0.0, 1.0).cpu().numpy().astype(np.float32)


def _support(counts, background, angles_deg, count_noise, nz, device) -> np.ndarray:
    """:func:`xray_support` of Poisson counts; 1 everywhere for maps without that noise."""
    if count_noise:
        return xray_support(counts, background, angles_deg, nz, device)
    depth = counts.shape[-1] if nz is None else nz
    return np.ones((depth, *counts.shape[2:]), np.float32)


def _choose_haadf_weight(halves, background, haadf, angles_deg, model, weight, count_noise,
                         common, band_rows: int | None = BAND_ROWS) -> float:
    """The candidate ``m`` whose half-A reconstruction best predicts half B (Poisson).

    The candidates reconstruct only the ``band_rows`` y rows with the most counts
    (:func:`~edxtomo.tomo.grid_search.signal_band`; None: every row): the rows along the
    tilt axis are separate problems but for TV, so a band is the same search, smaller."""
    half_a, half_b = (np.clip(np.asarray(h, dtype=np.float32), 0, None) for h in halves)
    rows = signal_band(half_a / np.maximum(half_a.mean(axis=(1, 2, 3), keepdims=True), 1e-30),
                       band_rows)
    half_a, half_b, haadf = half_a[:, :, rows], half_b[:, :, rows], haadf[:, rows]
    # half the dose: half the background, twice the HAADF per count
    half_background = np.broadcast_to(background, halves[0].shape)[:, :, rows] / 2
    half_model = replace(model, coefficients=2 * model.coefficients)
    support = _support(half_a, half_background, angles_deg, count_noise, common["nz"],
                       common["device"])
    deviance = {}
    for m in HAADF_WEIGHTS:
        volumes, _ = fused_pdhg(half_a, half_background, haadf, angles_deg, half_model, weight,
                                m, support=support, **common)
        deviance[m] = held_out_deviance(volumes, half_b, half_background, angles_deg,
                                        common["device"])
    log.info("fused: held-out Poisson deviance by HAADF weight m: %s",
             {m: round(d, 1) for m, d in deviance.items()})
    return min(deviance, key=deviance.get)


def _shares(volumes, residual, haadf, angles_deg, model, device) -> tuple[float, float]:
    """Shares of the HAADF above its offsets reprojected from the elements and the residual."""
    dev = resolve_device(device)
    op = Projector(angles_deg, volumes.shape[-1], nz=volumes.shape[1], device=dev)
    with torch.no_grad():
        stack = torch.as_tensor(np.concatenate([volumes, residual[None]]), device=dev)
        sums = op.forward(stack).flatten(1).sum(dim=1).cpu().numpy().astype(float)
    signal = float(model.linearise(haadf)[0].sum(dtype=np.float64))
    signal = signal if abs(signal) > _EPS else _EPS
    return float(model.coefficients @ sums[:-1]) / signal, float(sums[-1]) / signal


def write_fit(result: FusedResult, path) -> None:
    """The fitted HAADF model and the shares of the HAADF explained, as a one-row TSV."""
    import pandas as pd

    from edxtomo.io.atomic import atomic_path

    row = {"gamma": result.model.gamma, "gamma_sd": result.model.gamma_sd,
           "scale": result.model.scale, "offset_mean": float(result.model.offset.mean()),
           "haadf_noise_sigma": result.model.noise_sigma, "haadf_weight": result.haadf_weight,
           "explained_share": result.explained_share, "residual_share": result.residual_share,
           "inlier_fraction": result.model.inlier_fraction,
           "saturation_level": result.model.saturation_level}
    with atomic_path(path) as tmp:
        pd.DataFrame([row]).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
