"""The whole deep pipeline on one sample, in its order, and the folder it writes.

a. denoise the raw, unaligned counts of the extracted series (count splitting needs
   integer counts, which interpolation destroys);
   then apply the alignment transforms to the denoised maps, and put the aligned HAADF
   beside them as a channel of the model-based step;
b-d. model-based reconstruction, view enrichment and the final reconstruction
   (:func:`~edxtomo.deep.pipeline.reconstruct_deep`);
e. the self-check (:mod:`edxtomo.deep.selfcheck`): a-d and ``tv`` again on half of the
   counts, each scored on the other half (``reconstruct.deep.selfcheck``). Its step a trains
   beside the full run's (:func:`~edxtomo.tomo.device.side_by_side`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from edxtomo.align import apply_transforms
from edxtomo.deep.denoise import DenoiseResult, denoise_projections
from edxtomo.deep.pipeline import DeepResult, reconstruct_deep
from edxtomo.deep.selfcheck import run_selfcheck, training_series, write_selfcheck
from edxtomo.io import HAADF, TiltSeries, atomic_path, write_stack, write_volume
from edxtomo.options import DeepOptions, FusedOptions, ReconstructOptions
from edxtomo.options.base import with_chosen_weights
from edxtomo.tomo.device import resolve_device, side_by_side
from edxtomo.tomo.weights import write_weights

log = logging.getLogger(__name__)


@dataclass
class DeepRun:
    """Every product of :func:`run_deep`.

    Attributes
    ----------
    denoised : DenoiseResult
        Step a, in the raw (unaligned) frame at the measured angles.
    result : DeepResult
        Steps b-d, on the aligned grid.
    angles_deg : ndarray, shape (n_tilt,)
        Measured tilt angles in degrees.
    pixel_size_nm : float
    selfcheck : DataFrame or None
        ``deep`` against ``tv`` on held-out counts, one row per element
        (:func:`edxtomo.deep.selfcheck.run_selfcheck`); None when turned off.
    """

    denoised: DenoiseResult
    result: DeepResult
    angles_deg: np.ndarray
    pixel_size_nm: float
    selfcheck: pd.DataFrame | None = None


def run_deep(
    extracted: TiltSeries,
    aligned: TiltSeries,
    transforms: pd.DataFrame,
    options: DeepOptions,
    *,
    nz: int | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    classical: ReconstructOptions | None = None,
) -> DeepRun:
    """Run steps a to d of the deep pipeline on one sample, then its self-check.

    Parameters
    ----------
    extracted : TiltSeries
        The raw, unaligned series (counts, or float maps).
    aligned : TiltSeries
        The same series aligned; its HAADF, when present, joins the model-based step.
    transforms : DataFrame
        The alignment transforms (:func:`edxtomo.align.read_transforms`).
    options : DeepOptions
        Its ``budget`` fills the step counts left at None (logged).
    nz : int, optional
        Volume depth in voxels; default the image width.
    seed : int
        Seeds every random step.
    device : {"auto", "cpu", "cuda"} or torch.device
    checkpoint_dir : path-like, optional
        Training checkpoints and the model-based volume, so an interrupted run resumes.
    progress : bool
        tqdm bars with the losses.
    classical : ReconstructOptions, optional
        The classical methods' settings that deep reads: ``tv``, which the self-check
        compares with (``options.selfcheck``), and ``fused``, the HAADF model of
        ``mbir.data: fused``; default ``ReconstructOptions(nz=nz)``.

    Returns
    -------
    DeepRun
    """
    device = resolve_device(device)
    classical = classical or ReconstructOptions(nz=nz)
    options, budget = options.with_budget(device.type)
    log.info("training budget %r (reconstruct.deep.budget: %s) on %s: denoise %d steps of "
             "%d views, model-based %d x %d, enrichment %d steps, final %d iterations", budget,
             options.budget, device, options.denoise.steps, options.denoise.batch_size,
             options.mbir.outer, options.mbir.inner, options.enrich.steps,
             options.final.iterations)
    checked_raw = training_series(extracted, seed) if options.selfcheck else None
    held_out_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / "selfcheck"

    def step_a(raw: TiltSeries, checkpoints: Path | None) -> DenoiseResult:
        denoised = denoise_projections(raw, seed=seed, device=device,
                                       options=options.denoise, checkpoint_dir=checkpoints,
                                       progress=progress)
        log.info("denoising scheme: %s", denoised.scheme)
        return denoised

    def steps_b_to_d(denoised: DenoiseResult, raw: TiltSeries, registered: TiltSeries,
                     table: pd.DataFrame, run_options: DeepOptions,
                     checkpoints: Path | None) -> DeepResult:
        return _steps_b_to_d(denoised, raw.angles_deg, registered, table, run_options,
                             classical.fused, nz=nz, seed=seed, device=device,
                             checkpoint_dir=checkpoints, progress=progress)

    # without the self-check, the full run's step a alone keeps every torch thread
    denoised, *checked_denoised = side_by_side(
        device, lambda: step_a(extracted, checkpoint_dir),
        *([] if checked_raw is None else [lambda: step_a(checked_raw, held_out_dir)]))
    result = steps_b_to_d(denoised, extracted, aligned, transforms, options, checkpoint_dir)
    selfcheck = None
    if options.selfcheck:
        # The check scores the weights this run uses: step b's `auto` is not searched again.
        checked = with_chosen_weights(options, "mbir", result.chosen_weights)
        selfcheck = run_selfcheck(
            extracted, transforms,
            lambda registered, table: steps_b_to_d(checked_denoised[0], checked_raw,
                                                   registered, table, checked,
                                                   held_out_dir).volumes,
            classical, seed=seed, device=device)
    return DeepRun(denoised, result, np.asarray(aligned.angles_deg), aligned.pixel_size_nm,
                   selfcheck)


def _steps_b_to_d(denoised: DenoiseResult, raw_angles_deg: np.ndarray, aligned: TiltSeries,
                  transforms: pd.DataFrame, options: DeepOptions, fused: FusedOptions, *, nz,
                  seed, device, checkpoint_dir, progress) -> DeepResult:
    """The alignment of step a's maps (measured at ``raw_angles_deg``), then steps b-d
    (options with their budget); the aligned HAADF joins the model-based step."""
    views = {name: apply_transforms(stack, transforms, angles_deg=raw_angles_deg)
             for name, stack in denoised.projections.items()}
    if HAADF in aligned.channels:
        views = {HAADF: aligned.net_counts(HAADF), **views}
    result = reconstruct_deep(views, aligned.angles_deg, options, seed=seed, device=device,
                              nz=nz, checkpoint_dir=checkpoint_dir, progress=progress,
                              fused=fused)
    log.info("step times (s): %s", result.seconds)
    return result


def write_deep_run(run: DeepRun, directory: str | Path) -> None:
    """Write a deep run's volumes and intermediates under ``directory``.

    ``{channel}.tif`` (+ ``.hspy``): the final volumes; ``mbir/``: step b's volumes;
    ``enriched/{channel}.hspy``: the dense views (none with ``final.method: none``);
    ``denoised/{element}.hspy``: step a in the raw frame; ``losses.tsv``: the training loss
    of every network per step;
    ``selfcheck.tsv``: ``deep`` against ``tv`` on held-out counts, when it ran;
    ``weights.tsv``: step b's held-out curves and chosen weights (``mbir.weight: auto``).
    """
    out, pixel_nm, result = Path(directory), run.pixel_size_nm, run.result
    provenance = {"method": "deep", "scheme": run.denoised.scheme}
    for name, volume in result.volumes.items():
        write_volume(out / f"{name}.tif", volume, pixel_nm, name, provenance)
        write_volume(out / "mbir" / f"{name}.tif", result.mbir_volumes[name], pixel_nm, name)
    for name, views in result.enriched_views.items():
        write_stack(out / "enriched" / f"{name}.hspy", views, result.dense_angles_deg, pixel_nm,
                    name)
    for name, stack in run.denoised.projections.items():
        write_stack(out / "denoised" / f"{name}.hspy", stack, run.angles_deg, pixel_nm, name,
                    {"frame": "raw (unaligned)", "scheme": run.denoised.scheme}
                    | {key: value for key, value in (
                        ("noise_correlation_px", run.denoised.noise_correlation_px),
                        ("count_scale", run.denoised.count_scale.get(name))) if value is not None})
    losses = {**run.denoised.losses, **result.losses}
    table = pd.DataFrame({k: pd.Series(v) for k, v in losses.items()})
    with atomic_path(out / "losses.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index_label="step")
    write_selfcheck(run.selfcheck, out / "selfcheck.tsv")
    if result.weight_curves:
        write_weights(result.weight_curves, out / "weights.tsv")
