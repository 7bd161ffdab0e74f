"""The whole deep pipeline on one sample, in its order, and the folders it writes.

a. denoise the raw, unaligned counts of the extracted series (count splitting needs
   integer counts, which interpolation destroys), and the self-check's half of them
   beside it (:func:`denoise_part`, :func:`~edxtomo.tomo.device.side_by_side`);
   then apply the alignment transforms to the denoised maps, and put the aligned HAADF
   beside them as a channel of the model-based step;
b-d. model-based reconstruction, view enrichment and the final reconstruction
   (:func:`~edxtomo.deep.pipeline.reconstruct_deep`);
e. the self-check (:mod:`edxtomo.deep.selfcheck`): b-d and ``tv`` again on half of the
   counts, each scored on the other half (``reconstruct.deep.selfcheck``).

:func:`run_deep` runs a-e in one call. The workflow runs each training of step a as a job
of its own (:func:`denoise_part`, written by :func:`~edxtomo.deep.denoise.write_denoised`,
passed back to :func:`run_deep` as a :class:`Denoising`): they need only the extracted
series, so they start beside the alignment and the classical methods, one core each,
instead of after ``tv``, whose weights the self-check takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from edxtomo.align import apply_transforms
from edxtomo.deep.denoise import DenoiseResult, denoise_projections, read_denoised
from edxtomo.deep.pipeline import DeepResult, reconstruct_deep
from edxtomo.deep.selfcheck import run_selfcheck, training_series, write_selfcheck
from edxtomo.deep.training import write_losses
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import HAADF, TiltSeries, write_stack, write_volume
from edxtomo.options import DeepOptions, FusedOptions, ReconstructOptions
from edxtomo.options.base import with_chosen_weights
from edxtomo.options.deep import DENOISING_PARTS, SELFCHECK_PART
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


@dataclass
class Denoising:
    """Step a of a deep run.

    Attributes
    ----------
    full : DenoiseResult
        The extracted series denoised.
    selfcheck : DenoiseResult or None
        The self-check's training series denoised
        (:func:`~edxtomo.deep.selfcheck.training_series`); None with the self-check off.
    """

    full: DenoiseResult
    selfcheck: DenoiseResult | None = None


def read_denoising(full: str | Path, selfcheck: str | Path | None = None) -> Denoising:
    """Step a read back from the folders of its parts
    (:func:`~edxtomo.deep.denoise.write_denoised`); no ``selfcheck`` folder, no part."""
    return Denoising(read_denoised(full), None if selfcheck is None else read_denoised(selfcheck))


def denoise_part(extracted: TiltSeries, options: DeepOptions, part: str, *, seed: int = 0,
                 device: str | torch.device = "auto",
                 checkpoint_dir: str | Path | None = None,
                 progress: bool = True) -> DenoiseResult:
    """One training of step a: the extracted series (``part="full"``) or the self-check's
    training series (``"selfcheck"``). The workflow runs each as a job of its own.

    Parameters are those of :func:`run_deep`; only ``options.denoise`` and ``budget`` are
    read.
    """
    device = resolve_device(device)
    return _denoise_part(extracted, _with_budget(options, device), part, seed, device,
                         checkpoint_dir, progress)


def _with_budget(options: DeepOptions, device: torch.device) -> DeepOptions:
    """``options`` with the step counts of the budget that runs on ``device`` (logged)."""
    options, budget = options.with_budget(device.type)
    log.info("training budget %r (reconstruct.deep.budget: %s) on %s: denoise %d steps of "
             "%d views, model-based %d x %d, enrichment %d steps, final %d iterations", budget,
             options.budget, device, options.denoise.steps, options.denoise.batch_size,
             options.mbir.outer, options.mbir.inner, options.enrich.steps,
             options.final.iterations)
    return options


def _denoise_part(extracted: TiltSeries, options: DeepOptions, part: str, seed: int,
                  device: torch.device, checkpoint_dir: str | Path | None,
                  progress: bool) -> DenoiseResult:
    """:func:`denoise_part` with the budget's counts filled in."""
    if part not in DENOISING_PARTS:
        raise ValueError(f"step a has the parts {DENOISING_PARTS}, not {part!r}")
    raw = extracted if part == "full" else training_series(extracted, seed)
    denoised = denoise_projections(raw, seed=seed, device=device, options=options.denoise,
                                   checkpoint_dir=checkpoint_dir, progress=progress)
    log.info("denoising scheme (%s): %s", part, denoised.scheme)
    return denoised


def _denoise(extracted: TiltSeries, options: DeepOptions, seed: int, device: torch.device,
             checkpoint_dir: Path | None, progress: bool) -> Denoising:
    """Every part of step a, side by side (:func:`~edxtomo.tomo.device.side_by_side`);
    the self-check's checkpoints go under ``checkpoint_dir/selfcheck``."""
    # without the self-check, the full run's step a alone keeps every torch thread
    results = side_by_side(device, *[
        lambda part=part: _denoise_part(extracted, options, part, seed, device,
                                        _part_folder(checkpoint_dir, part), progress)
        for part in options.denoising_parts()])
    return Denoising(*results)


def _part_folder(checkpoint_dir: Path | None, part: str) -> Path | None:
    """Where a part of a run keeps its checkpoints: the self-check's in a subfolder."""
    if checkpoint_dir is None or part == "full":
        return checkpoint_dir
    return checkpoint_dir / SELFCHECK_PART


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
    denoising: Denoising | None = None,
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
    denoising : Denoising, optional
        Step a, run beforehand (:func:`denoise_part` of each of
        ``options.denoising_parts()``, the same options and seed); default: run it here.

    Returns
    -------
    DeepRun
    """
    device = resolve_device(device)
    classical = classical or ReconstructOptions(nz=nz)
    options = _with_budget(options, device)
    checkpoints = None if checkpoint_dir is None else Path(checkpoint_dir)
    if denoising is None:
        denoising = _denoise(extracted, options, seed, device, checkpoints, progress)
    elif options.selfcheck and denoising.selfcheck is None:
        raise EdxtomoInputError("the self-check is on (reconstruct.deep.selfcheck) but step a "
                                "denoised no self-check half: run step a with it on")

    def steps_b_to_d(denoised: DenoiseResult, registered: TiltSeries, table: pd.DataFrame,
                     run_options: DeepOptions, checkpoints: Path | None) -> DeepResult:
        return _steps_b_to_d(denoised, registered, table, run_options, classical.fused,
                             nz=nz, seed=seed, device=device, checkpoint_dir=checkpoints,
                             progress=progress)

    result = steps_b_to_d(denoising.full, aligned, transforms, options, checkpoints)
    selfcheck = None
    if options.selfcheck:
        # The check scores the weights this run uses: step b's `auto` is not searched again.
        checked = with_chosen_weights(options, "mbir", result.chosen_weights)
        checked_folder = _part_folder(checkpoints, SELFCHECK_PART)
        selfcheck = run_selfcheck(
            extracted, transforms,
            lambda registered, table: steps_b_to_d(denoising.selfcheck, registered, table,
                                                   checked, checked_folder).volumes,
            classical, seed=seed, device=device)
    return DeepRun(denoising.full, result, np.asarray(aligned.angles_deg),
                   aligned.pixel_size_nm, selfcheck)


def _steps_b_to_d(denoised: DenoiseResult, aligned: TiltSeries, transforms: pd.DataFrame,
                  options: DeepOptions, fused: FusedOptions, *, nz, seed, device,
                  checkpoint_dir, progress) -> DeepResult:
    """The alignment of step a's maps, then steps b-d (options with their budget); the
    aligned HAADF joins the model-based step."""
    views = {name: apply_transforms(stack, transforms, angles_deg=denoised.angles_deg)
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
    ``losses.tsv``: the training loss of every network of steps b-d per step (step a's:
    :func:`~edxtomo.deep.denoise.write_denoised`);
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
    write_losses(run.result.losses, out / "losses.tsv")
    write_selfcheck(run.selfcheck, out / "selfcheck.tsv")
    if result.weight_curves:
        write_weights(result.weight_curves, out / "weights.tsv")
