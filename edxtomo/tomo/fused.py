"""Fused HAADF + EDX reconstruction: all element volumes at once, the HAADF as a Z^gamma sum.

Objective, over non-negative element volumes ``c_e`` (counts per voxel length, as
:func:`edxtomo.tomo.tv.tv_kl`) and a non-negative residual volume ``r`` (HAADF units)::

    sum_e KL(y_e, A c_e + bg_e) + w_e TV(c_e)
    + lambda_H / 2 || h - (A (sum_e a_e c_e + r) + b_t) ||^2 + rho ||r||_1

with ``a_e = s Z_e^gamma / k_e``: ``k_e`` is the element's X-ray sensitivity (counts per
atom, relative; Cliff-Lorimer 1/k-factors), ``s`` the HAADF scale, ``b_t`` an offset per
tilt (the support film's projected thickness changes with the tilt) and ``gamma`` the
HAADF Z exponent (Schwartz et al., Nat. Commun. 15, 3555, 2024).

Steps:

1. :func:`edxtomo.tomo.haadf_model.fit_haadf_model` -- ``gamma`` (a grid over the prior
   range), ``s`` and ``b_t`` from the raw data.
2. ``lambda_H = m / sigma_h^2`` with ``sigma_h^2`` the per-pixel misfit variance of that
   fit. The multiplier ``m`` is chosen on count halves (binomial split): reconstruct from
   half A at each candidate ``m`` (``0`` is TV-KL, fusion off), score the Poisson deviance
   of half B.
3. :func:`fused_pdhg` -- the diagonally preconditioned PDHG of :mod:`edxtomo.tomo.tv`
   with the HAADF row added to ``K``, batched over the elements.

The residual's cost ``rho`` is set against the cheapest way an element explains HAADF
signal where no X-rays are counted: an element's KL gradient is at most ``n_tilt`` per
count, ``n_tilt / max_e a_e`` per HAADF unit, so ``rho = residual_cost * n_tilt /
max_e a_e``. With ``residual_cost < 1`` material seen only by the HAADF goes to ``r``; an
element there grows only while its KL gradient, ``A^T(1 - y / (A c + bg))``, stays below
``residual_cost * n_tilt``: to about ``residual_cost`` times the background counts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from edxtomo.errors import EdxtomoInputError
from edxtomo.tomo.counts import count_groups
from edxtomo.tomo.device import resolve_device
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
    """

    volumes: np.ndarray
    residual: np.ndarray
    model: HaadfModel
    haadf_weight: float
    explained_share: float
    residual_share: float

    def haadf_volume(self) -> np.ndarray:
        """The model's HAADF volume ``s sum_e Z_e^gamma c_e / k_e + r``, ``(nz, ny, nx)``."""
        volume = np.tensordot(self.model.coefficients, self.volumes, axes=1) + self.residual
        return volume.astype(np.float32)


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
    g = tensor(haadf - model.offset[:, None, None])[None]
    a = tensor(model.coefficients).view(n_el, 1, 1, 1)
    w = tensor(weight).clamp_min(1e-8).view(n_el, 1, 1, 1)
    lam = haadf_weight / model.noise_sigma**2
    # the residual is solved as r = a_max r', in the units of the element with the most
    # HAADF per count, so that the preconditioned steps move it as fast as that element
    a_max = float(a.max())
    rho = residual_cost * n_tilt

    # Pock-Chambolle preconditioners (alpha = 1) of K = [A c_e; A(sum a_e c_e + r); w grad]
    row = op.forward(torch.ones((1, nz, ny, nx), device=dev))
    col = op.adjoint(torch.ones((1, n_tilt, ny, nx), device=dev))
    sigma_y = 1.0 / row.clamp_min(_EPS)
    sigma_h = 1.0 / (row * (float(a.sum()) + a_max)).clamp_min(_EPS)
    fused_on = lam > 0
    tau_c = 1.0 / (col * (1.0 + a * fused_on) + 6.0 * w)
    tau_r = 1.0 / (a_max * col).clamp_min(_EPS)

    mass = (y - bg).clamp_min(0).flatten(1).sum(dim=1)
    c = (mass / row.sum().clamp_min(_EPS)).view(n_el, 1, 1, 1).expand(n_el, nz, ny, nx).clone()
    r = torch.zeros((1, nz, ny, nx), device=dev)
    ax = op.forward(torch.cat([c, r]))
    x_bar, ax_bar = torch.cat([c, r]), ax
    p_y, p_h = torch.zeros_like(y), torch.zeros_like(g)
    q = torch.zeros((n_el, 3, nz, ny, nx), device=dev)

    bar = tqdm(range(iterations), desc="PDHG fused", disable=not progress, mininterval=1.0)
    with torch.no_grad():
        for it in bar:
            v = p_y + sigma_y * (ax_bar[:n_el] + bg)
            p_y = 0.5 * (v + 1.0 - torch.sqrt((v - 1.0) ** 2 + 4.0 * sigma_y * y))
            q = q + 0.5 * gradient(x_bar[:n_el])
            q = q / q.pow(2).sum(dim=1, keepdim=True).sqrt().clamp_min(1.0)
            if fused_on:
                h_bar = (a * ax_bar[:n_el]).sum(dim=0, keepdim=True) + a_max * ax_bar[n_el:]
                p_h = (p_h + sigma_h * (h_bar - g)) / (1.0 + sigma_h / lam)
            back = op.adjoint(torch.cat([p_y, p_h]))
            c_new = (c - tau_c * (back[:n_el] + a * back[n_el:] + w * gradient_adjoint(q)))
            c_new = c_new.clamp_min(0)
            r_new = (r - tau_r * (a_max * back[n_el:] + rho)).clamp_min(0) if fused_on else r
            x_new = torch.cat([c_new, r_new])
            ax_new = op.forward(x_new)
            x_bar, ax_bar = 2 * x_new - torch.cat([c, r]), 2 * ax_new - ax
            c, r, ax = c_new, r_new, ax_new
            if it % 10 == 0 or it == iterations - 1:
                obj = _objective(ax, y, bg, g, c, r, a, a_max, w, lam, rho)
                if not np.isfinite(obj):
                    raise FloatingPointError(f"fused PDHG objective non-finite at iteration {it}")
                bar.set_postfix(objective=f"{obj:.5g}")
    log.info("fused PDHG: %d iterations, m=%.3g, objective %.6g", iterations, haadf_weight,
             _objective(ax, y, bg, g, c, r, a, a_max, w, lam, rho))
    return c.cpu().numpy().astype(np.float32), (a_max * r[0]).cpu().numpy().astype(np.float32)


def _objective(ax, y, bg, g, c, r, a, a_max, w, lam, rho) -> float:
    n_el = c.shape[0]
    value = kl_divergence(ax[:n_el] + bg, y).sum() + (w.flatten() * total_variation(c)).sum()
    if lam > 0:
        h = (a * ax[:n_el]).sum(dim=0, keepdim=True) + a_max * ax[n_el:]
        value = value + 0.5 * lam * (h - g).pow(2).sum() + rho * r.sum()
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
                                            weight, common)
    volumes, residual = fused_pdhg(counts, background, haadf, angles_deg, model, weight,
                                   float(haadf_weight), **common)
    explained, residual_share = _shares(volumes, residual, haadf, angles_deg, model, device)
    log.info("fused: gamma %.2f +- %.2f, scale %.4g, offset %.4g (mean over tilts), HAADF "
             "weight m=%g, HAADF explained by the elements %.1f%%, by the residual %.1f%%",
             model.gamma, model.gamma_sd, model.scale, float(model.offset.mean()),
             haadf_weight, 100 * explained, 100 * residual_share)
    return FusedResult(volumes, residual, model, float(haadf_weight), explained, residual_share)


def _choose_haadf_weight(halves, background, haadf, angles_deg, model, weight,
                         common) -> float:
    """The candidate ``m`` whose half-A reconstruction best predicts half B (Poisson)."""
    half_a, half_b = (np.clip(np.asarray(h, dtype=np.float32), 0, None) for h in halves)
    # half the dose: half the background, twice the HAADF per count
    half_model = replace(model, coefficients=2 * model.coefficients)
    deviance = {}
    for m in HAADF_WEIGHTS:
        volumes, _ = fused_pdhg(half_a, background / 2, haadf, angles_deg, half_model, weight,
                                m, **common)
        deviance[m] = held_out_deviance(volumes, half_b, background / 2, angles_deg,
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
    signal = float((haadf - model.offset[:, None, None]).sum())
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
           "inlier_fraction": result.model.inlier_fraction}
    with atomic_path(path) as tmp:
        pd.DataFrame([row]).to_csv(tmp, sep="\t", index=False, float_format="%.6g")
