"""Regularisation weights chosen from held-out data: no truth, no hand tuning.

Two ways to hold data out, both scored over a log-spaced grid of candidate weights that run
as channels of one batched solve (one PDHG run holds every element times every weight):

* **count halves** (:func:`weights_by_count_split`), for photon counts. Binomial thinning
  ``A ~ Binomial(y, 1/2)``, ``B = y - A`` gives two *independent* Poisson images of half the
  dose with the same mean. Each weight reconstructs A, and the reprojection (plus half the
  background) is scored by its Poisson deviance on B; the lowest deviance is the weight that
  best predicts counts it never saw. The minimum is refined by a parabola through the lowest
  grid point and its neighbours in ``log w``, and used at the full dose as it is. Like the
  left-out tilts below, the search reconstructs only a band of ``BAND_ROWS`` y rows with
  the most counts (on the 32^3 test specimen, two seeds: weights within 10% of every row's
  and PSNR within 0.1 dB, in half the time). Measured
  on the simulator (``bench/README.md``, 48^3, 800 counts): the truth-optimal weight at full
  dose is 0.4-1.1 times the half-dose one (median 0.63), and the held-out choice came out
  0.5-1.1 times the full-dose truth-optimal weight (median 0.63) for a loss of 0.0-0.8 dB;
  no correction is applied, as one seed does not pin a factor down.
* **left-out tilts** (:func:`weights_by_left_out_tilts`), for maps that are not counts (float
  exports, denoised maps). The tilts are dealt into interleaved folds; each fold is
  reconstructed from the other tilts and its reprojection is compared with the measured
  views at the left-out angles. Two things make the lowest error the weight that is best
  for the *volume*, not for the views:

  - the error is weighted by ``|k_u|`` across the detector (:func:`ramp_norm`). By the
    Fourier slice theorem a view at angle theta holds the volume's spectrum on one
    central plane, and the volume's squared error is the integral over those planes with
    the cylindrical Jacobian ``|k_u|``; the plain squared error of views weighs the
    volume's high frequencies, where too little smoothing leaves its noise, ``1 / |k_u|``
    too little, and chose 2-3 times too small a weight;
  - each fold reconstructs at ``grid * n_kept / n_tilt``: the data term sums over views,
    so a fold with fewer views needs proportionally less weight for the same balance (the
    rule by which step d scales step b's weight to its dense views).

  The measured views' own error is independent of the prediction when it is independent
  between views (correlated or not within one): it adds the same constant to every
  weight's score and moves no minimum. Every channel
  is divided by its mean first, and both solvers here are scale covariant, so maps of any
  scale (counts times 0.37, or times 1000) get the same weight. The folds reconstruct
  only a band of ``BAND_ROWS`` y rows (along the tilt axis) with the most signal, which
  chose the same weights as every row in 0.18 of the time at 64^3. The lowest summed error
  over the folds, refined like the count halves', is the choice: within 0.25 dB of the
  truth-tuned weight on the test specimens and the demo's shells, but 2.7 dB below it on
  the demo's large core, where every held-out design tried prefers less smoothing than the
  volume's PSNR does (``bench/README.md``).

Where a channel's lowest score lies at an edge of the grid, the grid is extended past that
edge one step at a time (:func:`extended_search`, at most ``MAX_EXTENSIONS`` steps); a choice
still at the edge after that is kept and logged as a warning.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import atomic_path
from edxtomo.tomo.counts import count_groups, poisson_deviance
from edxtomo.tomo.device import resolve_device, side_by_side
from edxtomo.tomo.grid_search import (
    BAND_ROWS,
    extended_search,
    ramp_norm,
    refine_minimum,
    signal_band,
)
from edxtomo.tomo.projector import project
from edxtomo.tomo.tv import tv_kl

log = logging.getLogger(__name__)

AUTO = "auto"
"""The option value that asks for a weight chosen here."""

GRID = tuple(float(w) for w in np.geomspace(0.1, 30.0, 6))
"""Candidate TV-KL weights for raw counts (or float maps of them): a factor 3.1 apart. On the
demo specimen at 800 counts per element and tilt the truth-optimal weights lie in 1-4."""

DENOISED_GRID = tuple(float(w) for w in np.geomspace(0.003, 1.0, 6))
"""Candidate weights of deep's step b, on denoised views (far less noise than raw counts)."""

SPLIT_STREAM = 0x3E1617
"""Mixed into the seed, so the weight split is not the denoiser's nor the self-check's."""

Solver = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``(views (c, n, ny, nx), angles_deg (n,), weights (c,)) -> volumes (c, nz, ny, nx)``."""


@dataclass(frozen=True)
class WeightCurves:
    """Held-out scores of every candidate weight, and the weight chosen, per channel.

    Attributes
    ----------
    channels : list of str
    grid : ndarray, shape (n_w,)
        Candidate weights, with any extension past an edge.
    scores : ndarray, shape (c, n_w)
        Held-out score of each weight (lower is better): mean Poisson deviance per pixel,
        or the ramp-weighted squared error of the left-out views summed over the folds,
        relative to that norm of the views (:func:`ramp_norm`).
    chosen : ndarray, shape (c,)
        The weight used, after the refinement and the dose or view correction.
    method : str
        What was held out, in words.
    """

    channels: list[str]
    grid: np.ndarray
    scores: np.ndarray
    chosen: np.ndarray
    method: str

    def as_dict(self) -> dict[str, float]:
        """The chosen weight by channel."""
        return dict(zip(self.channels, self.chosen.tolist(), strict=True))

    def table(self) -> pd.DataFrame:
        """Long table: ``channel, weight, score, chosen_weight, method``."""
        rows = [{"channel": name, "weight": w, "score": s, "chosen_weight": chosen,
                 "method": self.method}
                for name, row, chosen in zip(self.channels, self.scores, self.chosen,
                                             strict=True)
                for w, s in zip(self.grid, row, strict=True)]
        return pd.DataFrame(rows, columns=["channel", "weight", "score", "chosen_weight",
                                           "method"])


def weights_by_count_split(
    counts: np.ndarray,
    angles_deg: np.ndarray,
    channels: Sequence[str],
    *,
    background: np.ndarray | None = None,
    iterations: int = 150,
    seed: int = 0,
    grid: Sequence[float] = GRID,
    to_volume_frame: Callable[[np.ndarray], np.ndarray] | None = None,
    nz: int | None = None,
    band_rows: int | None = BAND_ROWS,
    device: str | torch.device = "auto",
) -> WeightCurves:
    """TV-KL weights per channel from count halves (see the module notes).

    Parameters
    ----------
    counts : ndarray, shape (c, n_tilt, ny, nx)
        Integer photon counts (gross, background included), in the frame the series was
        measured in.
    angles_deg : ndarray, shape (n_tilt,)
    channels : sequence of str
        Names of the ``c`` channels.
    background : ndarray, shape (c, n_tilt, ny, nx), optional
        Expected background counts under the line, in the volume frame.
    iterations : int
        PDHG iterations of each candidate (as the reconstruction that uses the weight).
    seed : int
        Seeds the binomial split.
    grid : sequence of float
        Candidate weights, increasing and log-spaced; extended past an edge that holds a
        minimum (:func:`extended_search`).
    to_volume_frame : callable, optional
        Maps a ``(n_tilt, ny, nx)`` stack to the frame of the volume (the alignment); the
        split is drawn before it, on the integer counts. Default: the identity.
    nz : int, optional
    band_rows : int or None
        Reconstruct and score only this many consecutive y rows, the band with the most
        counts (:func:`signal_band`); None: every row.
    device : str or torch.device

    Returns
    -------
    WeightCurves
    """
    counts = np.asarray(counts)
    _check_stack(counts, channels, "counts")
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise EdxtomoInputError("count halves need non-negative integer counts; use "
                                "weights_by_left_out_tilts for float maps")
    align = to_volume_frame or (lambda stack: stack)
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    half_a, half_b = count_groups(counts.astype(np.int64), 2, rng)
    train = np.stack([align(a) for a in half_a]).astype(np.float32)
    held_out = np.stack([align(b) for b in half_b]).astype(np.float32)
    mask = align(np.ones(counts.shape[1:], np.float32)) > 0.999
    bg = np.zeros_like(train) if background is None else np.asarray(background, np.float32) / 2
    mean = np.maximum(train.mean(axis=(1, 2, 3), keepdims=True), 1e-30)
    rows = signal_band(train / mean, band_rows)
    train, held_out, mask, bg = train[:, :, rows], held_out[:, :, rows], mask[:, rows], \
        bg[:, :, rows]
    c = len(channels)

    def evaluate(weights: np.ndarray) -> np.ndarray:
        n_w = len(weights)
        volumes = tv_kl(np.repeat(np.clip(train, 0, None), n_w, axis=0), angles_deg,
                        weight=np.tile(weights, c), iterations=iterations,
                        background=np.repeat(bg, n_w, axis=0), nz=nz, device=device,
                        progress=False)
        expected = np.asarray(project(volumes, angles_deg, device=device))
        expected += np.repeat(bg, n_w, 0)
        return np.array([poisson_deviance(held_out[i // n_w], expected[i], mask)
                         for i in range(c * n_w)]).reshape(c, n_w)

    grid, scores = extended_search(evaluate, grid)
    choices = [refine_minimum(grid, row) for row in scores]
    return _choose(list(channels), grid, scores, choices,
                   "count halves: TV-KL on binomial half A, Poisson deviance on half B, "
                   f"rows {rows.start}-{rows.stop - 1}")


def weights_by_left_out_tilts(
    views: np.ndarray,
    angles_deg: np.ndarray,
    channels: Sequence[str],
    solve: Solver,
    *,
    folds: int | None = None,
    grid: Sequence[float] = GRID,
    band_rows: int | None = BAND_ROWS,
    device: str | torch.device = "auto",
) -> WeightCurves:
    """Weights per channel from left-out tilts (see the module notes).

    Parameters
    ----------
    views : ndarray, shape (c, n_tilt, ny, nx)
        Maps in the volume frame (aligned), of any scale.
    angles_deg : ndarray, shape (n_tilt,)
    channels : sequence of str
    solve : callable
        The reconstruction whose weight is chosen, ``(views, angles_deg, weights) ->
        volumes``; it must be scale covariant (``tv_kl``, ``mbir_l2``).
    folds : int, optional
        Interleaved folds: fold ``k`` leaves out tilts ``k, k + folds, ...``. Default 4, or
        ``n_tilt // 2`` for fewer than 8 tilts, so that every fold leaves out 2 tilts.
    grid : sequence of float
        As for :func:`weights_by_count_split`.
    band_rows : int or None
        Reconstruct and score only this many consecutive y rows (along the tilt axis), the
        band that holds the most signal (:func:`signal_band`); None: every row.
    device : str or torch.device
        For the reprojection. On the CPU the folds run side by side, sharing the torch
        threads (:func:`~edxtomo.tomo.device.side_by_side`): ``solve`` must be thread safe.

    Returns
    -------
    WeightCurves
    """
    views = np.asarray(views, dtype=np.float32)
    _check_stack(views, channels, "views")
    n_tilt = views.shape[1]
    folds = min(4, n_tilt // 2) if folds is None else folds
    if not 2 <= folds <= n_tilt // 2:
        raise EdxtomoInputError(f"left-out tilts need 2 <= folds <= n_tilt / 2, got {folds} "
                                f"folds for {n_tilt} tilts")
    scale = np.abs(views).mean(axis=(1, 2, 3), keepdims=True)
    scale[scale == 0] = 1.0
    views = views / scale
    rows = signal_band(views, band_rows)
    views = views[:, :, rows]
    c = len(channels)
    norm = np.maximum(ramp_norm(views).reshape(c, 1), 1e-30)

    dev = resolve_device(device)

    def fold_scores(k: int, weights: np.ndarray) -> np.ndarray:
        n_w = len(weights)
        out = np.zeros(n_tilt, bool)
        out[k::folds] = True
        # the data term sums over views: each candidate as it weighs against n_tilt views
        fold_weights = np.tile(weights, c) * (n_tilt - out.sum()) / n_tilt
        volumes = solve(np.repeat(views[:, ~out], n_w, axis=0), angles_deg[~out], fold_weights)
        predicted = np.asarray(project(volumes, angles_deg[out], device=dev))
        return ramp_norm(predicted - np.repeat(views[:, out], n_w, axis=0)).reshape(c, n_w)

    def evaluate(weights: np.ndarray) -> np.ndarray:
        folds_scores = side_by_side(dev, *[functools.partial(fold_scores, k, weights)
                                           for k in range(folds)])
        return np.sum(folds_scores, axis=0) / norm

    grid, scores = extended_search(evaluate, grid)
    choices = [refine_minimum(grid, row) for row in scores]
    return _choose(list(channels), grid, scores, choices,
                   f"left-out tilts: {folds} interleaved folds, ramp-weighted squared error, "
                   f"rows {rows.start}-{rows.stop - 1}")


def tv_kl_weights(
    counts: np.ndarray,
    angles_deg: np.ndarray,
    channels: Sequence[str],
    *,
    background: np.ndarray | None = None,
    iterations: int = 150,
    seed: int = 0,
    nz: int | None = None,
    device: str | torch.device = "auto",
    raw_counts: np.ndarray | None = None,
    to_volume_frame: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[WeightCurves]:
    """TV-KL weights per channel: count halves for counts, left-out tilts for float maps.

    Parameters
    ----------
    counts : ndarray, shape (c, n_tilt, ny, nx)
        The maps that the TV-KL reconstruction will use (aligned), gross counts or floats.
    angles_deg : ndarray, shape (n_tilt,)
    channels : sequence of str
    background : ndarray, shape (c, n_tilt, ny, nx), optional
        Expected background under the line, aligned.
    iterations : int
        PDHG iterations, as the reconstruction.
    seed : int
        Seeds the count split.
    nz : int, optional
    device : str or torch.device
    raw_counts : ndarray, shape (c, n_tilt, ny, nx), optional
        The same maps before alignment: channels holding integer counts there are split
        there, and ``to_volume_frame`` aligns each half.
    to_volume_frame : callable, optional
        ``(n_tilt, ny, nx) -> (n_tilt, ny, nx)``: the alignment of ``raw_counts``.

    Returns
    -------
    list of WeightCurves
        One for the channels split into count halves, one for those scored on left-out
        tilts (each only when it has channels); :func:`chosen_weights` merges them.
    """
    counts = np.asarray(counts, np.float32)
    _check_stack(counts, channels, "counts")
    bg = np.zeros_like(counts) if background is None else np.asarray(background, np.float32)
    source = counts if raw_counts is None else np.asarray(raw_counts)
    split = [i for i in range(len(channels)) if _holds_counts(source[i])]
    rest = [i for i in range(len(channels)) if i not in split]
    curves = []
    if split:
        curves.append(weights_by_count_split(
            source[split], angles_deg, [channels[i] for i in split], background=bg[split],
            iterations=iterations, seed=seed,
            to_volume_frame=None if raw_counts is None else to_volume_frame, nz=nz,
            device=device))
    if rest:

        def solve(views: np.ndarray, angles: np.ndarray, weights: np.ndarray) -> np.ndarray:
            return tv_kl(np.clip(views, 0, None), angles, weight=weights,
                         iterations=iterations, nz=nz, device=device, progress=False)

        curves.append(weights_by_left_out_tilts(counts[rest] - bg[rest], angles_deg,
                                                [channels[i] for i in rest], solve,
                                                device=device))
    return curves


def chosen_weights(curves: Sequence[WeightCurves], channels: Sequence[str]) -> np.ndarray:
    """The chosen weight of every channel, ``(c,)``, in the order of ``channels``."""
    chosen = {name: w for curve in curves for name, w in curve.as_dict().items()}
    return np.array([chosen[name] for name in channels])


def write_weights(curves: Sequence[WeightCurves], path: str | Path) -> None:
    """Write the curves and the chosen weights as one TSV (``weights.tsv``)."""
    table = pd.concat([c.table() for c in curves], ignore_index=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def read_chosen_weights(path: str | Path) -> dict[str, float]:
    """The chosen weight by channel from a ``weights.tsv`` (:func:`write_weights`).

    Raises
    ------
    EdxtomoInputError
        The file lacks the ``channel`` or ``chosen_weight`` column.
    """
    table = pd.read_csv(path, sep="\t")
    if not {"channel", "chosen_weight"} <= set(table.columns):
        raise EdxtomoInputError(f"{path}: not a weights table (needs the columns channel and "
                                "chosen_weight)")
    chosen = table.drop_duplicates("channel").set_index("channel")["chosen_weight"]
    return {str(name): float(w) for name, w in chosen.items()}


def _choose(channels: list[str], grid: np.ndarray, scores: np.ndarray,
            choices: list[tuple[float, bool]], method: str) -> WeightCurves:
    chosen = np.empty(len(channels))
    for i, name in enumerate(channels):
        weight, at_edge = choices[i]
        chosen[i] = weight
        log.info("weight of %s: %.4g (%s; held-out score %s over weights %s)", name,
                 chosen[i], method, np.array2string(scores[i], precision=5),
                 np.array2string(grid, precision=3))
        if at_edge:
            log.warning("weight of %s: the held-out score is lowest at the edge of the grid "
                        "(%.3g); the best weight may lie beyond it: set a number to override",
                        name, weight)
    return WeightCurves(channels, grid, scores, chosen, method)


def _holds_counts(stack: np.ndarray) -> bool:
    """Non-negative integers (of any dtype): counts that binomial thinning may split."""
    stack = np.asarray(stack)
    if np.issubdtype(stack.dtype, np.integer):
        return bool(stack.min() >= 0) if stack.size else False
    return bool(np.all(stack >= 0) and np.all(stack == np.round(stack)))


def _check_stack(stack: np.ndarray, channels: Sequence[str], name: str) -> None:
    if stack.ndim != 4 or stack.shape[0] != len(channels):
        raise EdxtomoInputError(f"{name} must be (c, n_tilt, ny, nx) with c = {len(channels)} "
                                f"channels {list(channels)}, got shape {stack.shape}")
