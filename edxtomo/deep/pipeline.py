"""Steps b-d of the deep pipeline: model-based reconstruction, view enrichment, final recon.

Step a (:func:`edxtomo.deep.denoise_projections`) works on the raw, unaligned counts; the
workflow then applies the alignment transforms to its output and calls
:func:`reconstruct_deep` on the denoised, aligned projections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edxtomo.deep.enrich import enrich_views
from edxtomo.deep.training import fingerprint
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import HAADF, atomic_path
from edxtomo.options import (
    DeepOptions,
    FinalOptions,
    FusedOptions,
    MbirOptions,
    channel_weights,
    parse_options,
)
from edxtomo.options.deep import MBIR_WEIGHT
from edxtomo.tomo.device import resolve_device
from edxtomo.tomo.fbp import fbp
from edxtomo.tomo.fused import fused_reconstruct
from edxtomo.tomo.methods import atomic_numbers
from edxtomo.tomo.sirt import sirt
from edxtomo.tomo.tv import mbir_l2, tv_kl
from edxtomo.tomo.weights import (
    AUTO,
    DENOISED_GRID,
    WeightCurves,
    chosen_weights,
    weights_by_left_out_tilts,
)

log = logging.getLogger(__name__)

@dataclass
class DeepResult:
    """Every product of :func:`reconstruct_deep`, keyed by element.

    Attributes
    ----------
    volumes : dict of str to ndarray
        Final volumes ``(nz, ny, nx)``, float32, same voxel grid as SIRT's.
    mbir_volumes : dict of str to ndarray
        Model-based volumes of step b, ``(nz, ny, nx)``.
    enriched_views : dict of str to ndarray
        Enriched dense views of step c, ``(n_dense, ny, nx)``; empty with
        ``final.method: none``.
    dense_angles_deg : ndarray, shape (n_dense,)
        Empty with ``final.method: none``.
    losses : dict of str to list of float
        Training losses per network.
    seconds : dict of str to float
        Wall time of each step: ``"mbir"``, ``"enrich"``, ``"final"`` (``"mbir"`` alone with
        ``final.method: none``).
    peak_memory_bytes : dict of str to int
        On CUDA, the most device memory allocated during each step (empty on the CPU).
    weight_curves : list of WeightCurves
        Step b's weights chosen from left-out tilts (``mbir.weight: auto``); else empty.
    """

    volumes: dict[str, np.ndarray]
    mbir_volumes: dict[str, np.ndarray]
    enriched_views: dict[str, np.ndarray]
    dense_angles_deg: np.ndarray
    losses: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    peak_memory_bytes: dict[str, int] = field(default_factory=dict)
    weight_curves: list[WeightCurves] = field(default_factory=list)

    @property
    def chosen_weights(self) -> dict[str, float]:
        """Step b's weight by channel as chosen from the data (empty unless ``auto``)."""
        return {name: w for curve in self.weight_curves for name, w in curve.as_dict().items()}


def reconstruct_deep(
    projections: Mapping[str, np.ndarray],
    angles_deg: np.ndarray,
    options: DeepOptions | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    nz: int | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    fused: FusedOptions | None = None,
) -> DeepResult:
    """Model-based reconstruction, view enrichment and final reconstruction.

    Parameters
    ----------
    projections : dict of str to ndarray
        Per element, denoised and aligned projections (net counts), ``(n_tilt, ny, nx)``.
    angles_deg : ndarray, shape (n_tilt,)
        Tilt angles in degrees.
    options : DeepOptions, optional
        Steps b-d read its ``mbir``, ``enrich`` and ``final``; default ``DeepOptions()``.
        Counts left at None come from its budget on the device.
    seed : int
        Seeds the enrichment network.
    device : {"auto", "cpu", "cuda"} or torch.device
    nz : int, optional
        Volume depth in voxels; default ``nx`` (as SIRT).
    checkpoint_dir : path-like, optional
        Keeps the model-based volume (``mbir.npz``) and the enrichment checkpoint, so an
        interrupted run resumes.
    progress : bool
    fused : FusedOptions, optional
        The HAADF model's settings (``sensitivity``, ``gamma_range``, ``residual_cost``, a
        numeric ``haadf_weight``) for ``mbir.data: fused``; default ``FusedOptions()``.

    Returns
    -------
    DeepResult
    """
    dev = resolve_device(device)
    options, _ = parse_options(DeepOptions, options, "reconstruct.deep").with_budget(dev.type)
    mbir_opts, final_opts = options.mbir, options.final
    elements = list(projections)
    if not elements:
        raise EdxtomoInputError("no projections to reconstruct")
    stack = np.stack([np.asarray(projections[e], np.float32) for e in elements])
    if not np.all(np.isfinite(stack)):
        raise EdxtomoInputError("the denoised projections hold NaN or infinite values")
    angles_deg = np.asarray(angles_deg, dtype=float)
    fused = fused or FusedOptions()

    clock = _Clock(dev)
    volumes, curves = _cached_mbir(stack, angles_deg, mbir_opts, elements, fused, nz, dev,
                                   checkpoint_dir, progress)
    mbir_opts = mbir_opts.model_copy(update={"weight": _weights_of(curves, mbir_opts, elements)})
    clock.lap("mbir")
    if final_opts.method == "none":
        log.info("final: none; step b's volumes are the result (no enrichment, no step d)")
        dense, enriched, losses, final_volumes = np.zeros(0), {}, {}, volumes
    else:
        dense, views, enrich_losses = enrich_views(
            volumes, stack, angles_deg, seed=seed, device=dev, options=options.enrich,
            checkpoint_dir=checkpoint_dir, progress=progress, memory_gib=mbir_opts.memory_gib)
        clock.lap("enrich")
        final_volumes = _final(views, dense, len(angles_deg), final_opts, mbir_opts, elements,
                               fused, nz, dev, progress)
        clock.lap("final")
        enriched = {e: views[i] for i, e in enumerate(elements)}
        losses = {"enrich": enrich_losses}
    log.info("deep reconstruction steps (s): %s",
             ", ".join(f"{k} {v:.1f}" for k, v in clock.seconds.items()))
    return DeepResult(
        volumes={e: final_volumes[i] for i, e in enumerate(elements)},
        mbir_volumes={e: volumes[i] for i, e in enumerate(elements)},
        enriched_views=enriched,
        dense_angles_deg=dense,
        losses=losses,
        seconds=clock.seconds,
        peak_memory_bytes=clock.peak_bytes,
        weight_curves=curves,
    )


def _final(views: np.ndarray, dense_deg: np.ndarray, n_measured: int, final_opts: FinalOptions,
           mbir_opts: MbirOptions, elements: list[str], fused: FusedOptions, nz: int | None,
           dev: torch.device, progress: bool) -> np.ndarray:
    """Step d: the volumes ``(c, nz, ny, nx)`` from the enriched views ``(c, n_dense, ny, nx)``."""
    log.info("final %s reconstruction from %d enriched views", final_opts.method, len(dense_deg))
    if final_opts.method == "sirt":
        return sirt(views, dense_deg, iterations=final_opts.iterations, device=dev, nz=nz,
                    progress=progress)
    if final_opts.method == "fbp":
        return fbp(views, dense_deg, filter=final_opts.filter, device=dev, nz=nz)
    weight = mbir_opts.weight if final_opts.weight is None else final_opts.weight
    scaled = np.multiply(channel_weights(weight, elements, MBIR_WEIGHT),
                         len(dense_deg) / n_measured)
    # data: fused ends with kl: fusing the enriched views too lost against a kl step d after
    # the same fused step b (48^3, 7 tilts): In -5.1 dB at 20 step-d iterations, Zn -3.3 dB
    # at 100, the other elements within 1 dB (bench/README.md)
    dense_opts = MbirOptions(data="kl" if mbir_opts.data == "fused" else mbir_opts.data,
                             weight=dict(zip(elements, scaled.tolist(), strict=True)),
                             outer=final_opts.iterations, inner=1,
                             slab_slices=mbir_opts.slab_slices, memory_gib=mbir_opts.memory_gib)
    return _model_based(views, dense_deg, dense_opts, elements, fused, nz, dev, progress)


class _Clock:
    """Wall time and, on CUDA, peak device memory per step; waits for the GPU so that a lap
    holds its own work."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self.peak_bytes = device, {}, {}
        self.start = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    def lap(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes[name] = torch.cuda.max_memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        now = time.perf_counter()
        self.seconds[name] = now - self.start
        self.start = now
        peak = self.peak_bytes.get(name)
        log.info("deep step %s: %.1f s%s", name, self.seconds[name],
                 "" if peak is None else f", peak GPU memory {peak / 2**30:.1f} GiB")


def _weights_of(curves: list[WeightCurves], opts: MbirOptions, elements: list[str]
                ) -> dict[str, float]:
    """Step b's weight by element: the chosen ones for ``auto``, else the configured ones."""
    if opts.weight == AUTO:
        weights = chosen_weights(curves, elements)
    else:
        weights = channel_weights(opts.weight, elements, MBIR_WEIGHT)
    return dict(zip(elements, np.asarray(weights, float).tolist(), strict=True))


def _model_based(stack: np.ndarray, angles_deg: np.ndarray, opts: MbirOptions,
                 elements: list[str], fused: FusedOptions, nz: int | None,
                 dev: torch.device, progress: bool) -> np.ndarray:
    """TV-KL, fused or least-squares model-based reconstruction of ``(c, n, ny, nx)`` views."""
    weights = channel_weights(opts.weight, elements, MBIR_WEIGHT)
    return _solve_mbir(stack, angles_deg, opts, weights, elements, fused, nz, dev, progress)


def _solve_mbir(stack: np.ndarray, angles_deg: np.ndarray, opts: MbirOptions,
                weights: Sequence[float], channels: list[str], fused: FusedOptions,
                nz: int | None, dev: torch.device, progress: bool) -> np.ndarray:
    """Step b's objective with one weight per channel of ``stack``."""
    if opts.data == "fused":
        return _solve_fused(stack, angles_deg, opts, weights, channels, fused, nz, dev,
                            progress)
    if opts.data == "kl":
        return tv_kl(np.maximum(stack, 0), angles_deg, weight=weights,
                     iterations=opts.outer * opts.inner, nz=nz, device=dev, progress=progress,
                     slab_slices=opts.slab_slices, memory_gib=opts.memory_gib)
    return mbir_l2(stack, angles_deg, reg=opts.reg, weight=weights, outer=opts.outer,
                   inner=opts.inner, solver=opts.solver, nz=nz, device=dev, progress=progress,
                   slab_slices=opts.slab_slices, memory_gib=opts.memory_gib)


def _solve_fused(stack: np.ndarray, angles_deg: np.ndarray, opts: MbirOptions,
                 weights: Sequence[float], channels: list[str], fused: FusedOptions,
                 nz: int | None, dev: torch.device, progress: bool) -> np.ndarray:
    """``data: fused``: the fused objective (:func:`edxtomo.tomo.fused.fused_reconstruct`)
    on the element maps and the HAADF channel of ``stack``.

    The denoised maps keep count units and an error that grows with the rate, so their term
    stays KL (as ``data: kl``), with no background (they are net counts), clipped at 0. Their
    noise is far below Poisson, so the HAADF model is fitted taking them as exact. Count
    halves do not exist for them: ``haadf_weight: auto`` becomes 1, the HAADF's own
    likelihood. The HAADF channel's volume is the model's, ``s sum_e Z_e^gamma c_e / k_e +
    r``.
    """
    if HAADF not in channels:
        raise EdxtomoInputError("reconstruct.deep.mbir.data: fused needs a HAADF channel; the "
                                f"series has {channels}")
    h = channels.index(HAADF)
    keep = [i for i in range(len(channels)) if i != h]
    names = [channels[i] for i in keep]
    if not names:
        raise EdxtomoInputError("reconstruct.deep.mbir.data: fused needs at least one element")
    maps = np.maximum(stack[keep], 0)
    haadf_weight = 1.0 if fused.haadf_weight == AUTO else float(fused.haadf_weight)
    result = fused_reconstruct(
        maps, np.zeros_like(maps), stack[h], angles_deg, atomic_numbers(names),
        channel_weights(fused.sensitivity, names, 1.0), [weights[i] for i in keep],
        haadf_weight=haadf_weight, gamma_range=fused.gamma_range,
        residual_cost=fused.residual_cost, iterations=opts.outer * opts.inner,
        count_noise=False, nz=nz, device=dev, progress=progress)
    volumes = np.empty((len(channels), *result.residual.shape), np.float32)
    volumes[keep] = result.volumes
    volumes[h] = result.haadf_volume()
    return volumes


def _step_b_weights(stack: np.ndarray, angles_deg: np.ndarray, opts: MbirOptions,
                    elements: list[str], fused: FusedOptions, nz: int | None,
                    dev: torch.device) -> list[WeightCurves]:
    """``mbir.weight: auto``: step b's weights from left-out tilts of the denoised views
    (:func:`edxtomo.tomo.weights.weights_by_left_out_tilts`); the denoised maps are not
    Poisson counts, so count halves do not apply.

    The search reconstructs every channel and candidate apart, which the fused objective
    cannot (its HAADF term couples the channels): with ``data: fused`` the weights are
    chosen on the KL term alone, the fused objective's own term for the element maps."""
    search = opts.model_copy(update={"data": "kl"}) if opts.data == "fused" else opts

    def solve(views: np.ndarray, angles: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return _solve_mbir(views, angles, search, weights, elements, fused, nz, dev, False)

    return [weights_by_left_out_tilts(stack, angles_deg, elements, solve,
                                      grid=DENOISED_GRID, device=dev)]


def _cached_mbir(stack, angles_deg, opts: MbirOptions, elements, fused: FusedOptions, nz,
                 dev, checkpoint_dir, progress) -> tuple[np.ndarray, list[WeightCurves]]:
    """Step b (and its weight search for ``auto``), reusing a finished result kept in
    ``checkpoint_dir`` for the same input."""
    settings = {"fused": fused.model_dump()} if opts.data == "fused" else {}
    key = fingerprint(stack, angles_deg, nz=nz, options=opts.model_dump(),
                      elements=elements, **settings)
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / "mbir.npz"
    if path is not None and path.exists():
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["key"]) == key and "scores" in cached:
                log.info("model-based volumes taken from %s", path)
                curves = [WeightCurves(elements, cached["grid"], cached["scores"],
                                       cached["chosen"], str(cached["method"]))
                          ] if cached["grid"].size else []
                return cached["volumes"], curves
    curves = (_step_b_weights(stack, angles_deg, opts, elements, fused, nz, dev)
              if opts.weight == AUTO else [])
    weights = list(_weights_of(curves, opts, elements).values())
    volumes = _solve_mbir(stack, angles_deg, opts, weights, elements, fused, nz, dev, progress)
    if path is not None:
        curve = curves[0] if curves else WeightCurves(elements, np.zeros(0), np.zeros((0, 0)),
                                                      np.zeros(0), "")
        with atomic_path(path) as tmp, open(tmp, "wb") as stream:
            np.savez(stream, key=key, volumes=volumes, grid=curve.grid, scores=curve.scores,
                     chosen=curve.chosen, method=curve.method)
    return volumes, curves
