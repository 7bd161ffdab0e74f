"""The self-check of every deep run: ``deep`` against ``tv`` on counts neither has seen.

Method (count splitting, DESIGN stage 4):

1. Split the extracted (raw, unaligned) integer counts of every element binomially,
   ``A ~ Binomial(y, 1/2)``, ``B = y - A``, with a seeded generator. Poisson thinning makes A
   and B *independent* Poisson images of half the dose with the same mean, so B is an
   unbiased target that neither reconstruction has touched (frames, when kept, are split
   frame by frame and B is summed over them).
2. Run the deep pipeline (steps a-d, the same options and budget) on half A, and TV-KL
   (:func:`edxtomo.tomo.methods.reconstruct_series`, ``tv``) on half A aligned with the
   same transforms. Half A's background is half the series' background, which is the
   full-dose expected background in count units.
3. Reproject both volumes at the measured angles; B's expected counts are that
   reprojection (the A-volume is at half dose, as B is) plus half the background under the
   line. Score each against B with the Poisson deviance
   ``2 sum(y log(y / mu) - (y - mu))``, the likelihood-ratio distance of a model to the
   counts: the method with the lower deviance predicts counts it never saw better.

Why the aligned frame: the volumes live there. B is aligned with the same linear
interpolation as A, which smooths B's noise for both methods alike, so the comparison
stays fair; the absolute deviance is then not chi-square calibrated, only the difference
is read. Pixels the alignment moves outside the measured field are left out. The deviance
is reported as a mean per pixel of that field, per element; ``margin_percent`` is
``100 (tv - deep) / tv``, positive when ``deep`` wins. Both deviances hold B's own
Poisson noise, which no model removes, so margins are a few percent even between clearly
different reconstructions.

Float maps that are not counts (:func:`edxtomo.deep.is_counts` false) cannot be split;
they get the left-out-tilts variant (:func:`run_tilt_check`): a few tilts spread over the
series (:func:`left_out_tilts`) are removed, deep (steps a-d) and tv reconstruct the rest,
and each volume's reprojection at the left-out angles is compared with the measured,
aligned maps there by the relative squared error after a least-squares scale,
``min_a ||a P - V||^2 / ||V||^2`` (scale invariant: float maps have no count units). The
table has the same columns; ``deep_deviance`` and ``tv_deviance`` then hold that error,
``n_counts_heldout`` is 0 and ``method`` names the variant.

Cost: the check reruns steps a-d and a TV-KL on half A, which about doubles a deep job's
time; ``reconstruct.deep.selfcheck: false`` turns it off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from edxtomo.align import apply_to_series, apply_transforms
from edxtomo.deep.schemes import is_counts
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import TiltSeries, atomic_path
from edxtomo.options import ReconstructOptions
from edxtomo.tomo import project
from edxtomo.tomo.counts import count_groups, poisson_deviance
from edxtomo.tomo.methods import reconstruct_series

log = logging.getLogger(__name__)

COLUMNS = ("element", "deep_deviance", "tv_deviance", "deep_wins", "margin_percent",
           "n_counts_heldout", "method")
METHOD = "count split 1/2 (binomial), Poisson deviance on half B"
SPLIT_STREAM = 0x5E1F
"""Mixed into the seed, so the held-out split is not the denoiser's first training split."""

TILT_METHOD = "left-out tilts ({}), relative squared error after a scale fit"
DeepSteps = Callable[[TiltSeries, pd.DataFrame], dict[str, np.ndarray]]
"""Steps b-d on (aligned series, its transforms), returning the volumes by channel; step a
has denoised :func:`training_series` (the caller runs it, beside the full run's step a)."""


def split_halves(series: TiltSeries, seed: int) -> tuple[TiltSeries, dict[str, np.ndarray]]:
    """Half A of every element's counts as a series, and half B summed over frames.

    Half A keeps the HAADF, the frames and the provenance, and half the background.
    """
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    half_a, half_b = dict(series.channels), {}
    for element in series.elements:
        counts = series.channels[element]
        half_a[element], rest = count_groups(counts, 2, rng)
        half_b[element] = rest.sum(axis=1) if rest.ndim == 4 else rest
    background = {e: np.asarray(b, np.float32) / 2 for e, b in series.background.items()}
    return (TiltSeries(half_a, series.angles_deg, series.pixel_size_nm,
                       dict(series.provenance), background), half_b)




def float_maps(series: TiltSeries) -> list[str]:
    """The elements whose maps are floats, not counts: they cannot be split."""
    return [e for e in series.elements if not is_counts(series, e)]


def training_series(extracted: TiltSeries, seed: int) -> TiltSeries:
    """The raw series the self-check's deep run learns from: half A of the counts
    (:func:`split_halves`), or for float maps the series without its left-out tilts
    (:func:`left_out_tilts`)."""
    if float_maps(extracted):
        return _tilt_subset(extracted, ~left_out_tilts(len(extracted.angles_deg)))
    return split_halves(extracted, seed)[0]


def score(volumes: dict[str, np.ndarray], held_out: dict[str, np.ndarray],
          background: dict[str, np.ndarray], angles_deg: np.ndarray, mask: np.ndarray,
          device) -> dict[str, float]:
    """Per element, the deviance of B against the reprojected volume plus B's background."""
    out = {}
    for element, counts in held_out.items():
        expected = project(np.asarray(volumes[element], np.float32), angles_deg, device=device)
        expected = np.asarray(expected) + background.get(element, 0.0)
        out[element] = poisson_deviance(counts, expected, mask)
    return out


def comparison_table(deep: dict[str, float], tv: dict[str, float],
                     held_out: dict[str, np.ndarray], method: str = METHOD) -> pd.DataFrame:
    """The ``selfcheck.tsv`` rows: one per element (``held_out``: counts, or float maps
    that count as 0)."""
    rows = [{"element": e, "deep_deviance": deep[e], "tv_deviance": tv[e],
             "deep_wins": bool(deep[e] < tv[e]),
             "margin_percent": 100 * (tv[e] - deep[e]) / tv[e] if tv[e] else np.nan,
             "n_counts_heldout": int(held_out[e].sum()) if method == METHOD else 0,
             "method": method} for e in deep]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def left_out_tilts(n_tilt: int) -> np.ndarray:
    """Which tilts the float-map check leaves out: ``max(2, n_tilt // 4)`` tilts spread
    evenly between the first and the last (which stay: no extrapolation in angle).

    Returns
    -------
    ndarray of bool, shape (n_tilt,)
    """
    if n_tilt < 5:
        raise EdxtomoInputError(f"the left-out-tilts self-check needs at least 5 tilts, got "
                                f"{n_tilt}")
    out = np.zeros(n_tilt, bool)
    out[np.round(np.linspace(1, n_tilt - 2, max(2, n_tilt // 4))).astype(int)] = True
    return out


def scaled_error(measured: np.ndarray, predicted: np.ndarray, mask: np.ndarray) -> float:
    """``min_a ||a P - V||^2 / ||V||^2`` over ``mask``: 0 for a perfect prediction up to
    scale, 1 for one that explains nothing."""
    v = measured[mask].astype(np.float64)
    p = predicted[mask].astype(np.float64)
    a = float(p @ v) / max(float(p @ p), 1e-300)
    return float(np.sum((a * p - v) ** 2) / max(float(v @ v), 1e-300))


def _tilt_subset(series: TiltSeries, keep: np.ndarray) -> TiltSeries:
    """The series at the tilts ``keep`` (channels, frames, background)."""
    return TiltSeries({n: d[keep] for n, d in series.channels.items()},
                      series.angles_deg[keep], series.pixel_size_nm, dict(series.provenance),
                      {n: b[keep] for n, b in series.background.items()})


def run_tilt_check(extracted: TiltSeries, transforms: pd.DataFrame, deep_steps: DeepSteps,
                   tv_options: ReconstructOptions, *, device="cpu") -> pd.DataFrame:
    """Compare ``deep`` with ``tv`` on left-out tilts of float maps (module docstring).

    Parameters are those of :func:`run_selfcheck`; returns the same table.
    """
    out = left_out_tilts(len(extracted.angles_deg))
    keep = ~out
    aligned = apply_to_series(extracted, transforms)
    table_keep = transforms[keep].reset_index(drop=True)
    aligned_keep = _tilt_subset(aligned, keep)
    angles_out = aligned.angles_deg[out]
    field = np.ones(extracted.summed(extracted.elements[0]).shape, np.float32)
    mask = apply_transforms(field, transforms)[out] > 0.999
    log.info("self-check (float maps): deep and tv without the tilts at %s deg, scored there",
             np.round(angles_out, 1).tolist())
    held_out = {e: aligned.net_counts(e)[out] for e in extracted.elements}

    def errors(volumes: dict[str, np.ndarray]) -> dict[str, float]:
        return {e: scaled_error(held_out[e], np.asarray(project(
            np.asarray(volumes[e], np.float32), angles_out, device=device)), mask)
            for e in held_out}

    deep = errors(deep_steps(aligned_keep, table_keep))
    elements = TiltSeries({e: aligned_keep.channels[e] for e in aligned_keep.elements},
                          aligned_keep.angles_deg, aligned_keep.pixel_size_nm, {},
                          aligned_keep.background)
    tv = errors(reconstruct_series(elements, "tv", tv_options, device=_kind(device)))
    method = TILT_METHOD.format(", ".join(f"{a:g}" for a in np.round(angles_out, 1)))
    table = comparison_table(deep, tv, held_out, method)
    warn_losses(table)
    return table


def skipped_table(elements: list[str], reason: str) -> pd.DataFrame:
    """One ``skipped`` row per element, with the reason as its method."""
    rows = [{"element": e, "deep_deviance": np.nan, "tv_deviance": np.nan, "deep_wins": pd.NA,
             "margin_percent": np.nan, "n_counts_heldout": 0, "method": f"skipped: {reason}"}
            for e in elements]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _kind(device) -> str:
    """``"cpu"`` or ``"cuda"`` for :func:`reconstruct_series`."""
    return getattr(device, "type", None) or str(device).split(":")[0]


def warn_losses(table: pd.DataFrame) -> None:
    """Log the verdict: INFO per winning element, a WARNING naming every losing one."""
    for row in table.itertuples():
        if pd.isna(row.deep_wins):
            continue
        if row.deep_wins:
            log.info("self-check %s: deep beats tv on held-out counts (deviance %.4g vs "
                     "%.4g, %+.2f%%)", row.element, row.deep_deviance, row.tv_deviance,
                     row.margin_percent)
        else:
            log.warning(
                "self-check %s: deep does NOT beat tv on held-out counts (deviance %.4g vs "
                "%.4g, %+.2f%%): try a longer budget (reconstruct.deep.budget: full), more "
                "denoising steps (reconstruct.deep.denoise.steps), or use tv for %s",
                row.element, row.deep_deviance, row.tv_deviance, row.margin_percent,
                row.element)


def run_selfcheck(
    extracted: TiltSeries,
    transforms: pd.DataFrame,
    deep_steps: DeepSteps,
    tv_options: ReconstructOptions,
    *,
    seed: int = 0,
    device="cpu",
) -> pd.DataFrame:
    """Compare ``deep`` with ``tv`` on held-out counts (see the module docstring).

    Parameters
    ----------
    extracted : TiltSeries
        The raw series; half A keeps its HAADF, aligned with the counts.
    transforms : DataFrame
        The alignment transforms.
    deep_steps : callable
        Steps b-d with the run's options, on step a's maps of :func:`training_series`:
        ``(aligned half A, transforms) -> volumes``.
    tv_options : ReconstructOptions
        ``nz`` and ``tv`` of the TV-KL reconstruction.
    seed : int
        Seeds the split.
    device : torch.device or str

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS`, one row per element.
    """
    floats = float_maps(extracted)
    if floats:
        log.info("self-check: float maps, not counts (%s): left-out tilts instead of a count "
                 "split", ", ".join(floats))
        return run_tilt_check(extracted, transforms, deep_steps, tv_options, device=device)
    half_a, half_b = split_halves(extracted, seed)
    aligned_a = apply_to_series(half_a, transforms)
    angles = aligned_a.angles_deg
    held_out = {e: apply_transforms(b, transforms, angles_deg=angles) for e, b in half_b.items()}
    mask = apply_transforms(np.ones_like(next(iter(half_b.values())), np.float32), transforms,
                            angles_deg=angles) > 0.999
    log.info("self-check: deep and tv on half A of the counts, scored on half B")
    deep = score(deep_steps(aligned_a, transforms), held_out, aligned_a.background, angles,
                 mask, device)
    elements_a = TiltSeries({e: aligned_a.channels[e] for e in aligned_a.elements}, angles,
                            aligned_a.pixel_size_nm, {}, aligned_a.background)
    tv = score(reconstruct_series(elements_a, "tv", tv_options, device=_kind(device)), held_out,
               aligned_a.background, angles, mask, device)
    table = comparison_table(deep, tv, {e: b for e, b in half_b.items()})
    warn_losses(table)
    return table


def write_selfcheck(table: pd.DataFrame | None, path: str | Path) -> None:
    """Write ``selfcheck.tsv`` (nothing when the check did not run)."""
    if table is not None:
        with atomic_path(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
