"""Image-quality figures of a reconstructed volume against a known ground truth.

Every figure is computed inside a region around the particles (by default the bounding box
of the truth's support, see :func:`particle_region`), after a least-squares fit of one scale
factor of the volume to the truth. Reconstructions are only known up to a scale (counts per
voxel versus concentration), so the fit removes that nuisance without hiding structure:
a single scalar cannot fix noise, blur or artefacts.
"""

from __future__ import annotations

import numpy as np

Region = tuple[slice, ...]


def particle_region(
    truth: np.ndarray, margin_vox: int = 2, threshold_fraction: float = 0.01
) -> Region:
    """Bounding box of the particles in a ground-truth volume.

    Parameters
    ----------
    truth : ndarray, shape (nz, ny, nx) or (n_channel, nz, ny, nx)
        Ground-truth concentrations; with a channel axis the union of all channels' support
        is used, so every element is scored in the same box.
    margin_vox : int
        Voxels added on each side of the box (clipped to the volume), so that halos and
        streaks just outside the particles count against a reconstruction.
    threshold_fraction : float
        A voxel belongs to the support when it exceeds this fraction of the maximum.

    Returns
    -------
    tuple of slice
        ``(z, y, x)`` slices of the box.
    """
    truth = np.asarray(truth)
    support = truth if truth.ndim == 3 else truth.max(axis=0)
    if support.ndim != 3:
        raise ValueError(f"truth must be (nz, ny, nx) or (c, nz, ny, nx), got {truth.shape}")
    mask = support > threshold_fraction * support.max()
    if not mask.any():
        raise ValueError("the truth volume is empty: no particle to score")
    region = []
    for axis, size in enumerate(mask.shape):
        others = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=others))
        region.append(slice(max(idx[0] - margin_vox, 0), min(idx[-1] + 1 + margin_vox, size)))
    return tuple(region)


def scale_fit(volume: np.ndarray, truth: np.ndarray, region: Region | None = None) -> float:
    """Least-squares scale ``a`` minimising ``||a * volume - truth||^2`` inside ``region``."""
    return _fit(*_crop(volume, truth, region))


def psnr(volume: np.ndarray, truth: np.ndarray, region: Region | None = None) -> float:
    """Peak signal-to-noise ratio in dB after the scale fit.

    The peak is the truth's range inside the region: ``10 log10(range^2 / MSE)``.

    Parameters
    ----------
    volume, truth : ndarray, shape (nz, ny, nx)
    region : tuple of slice, optional
        Scoring box; default :func:`particle_region` of ``truth``.
    """
    v, t = _crop(volume, truth, region)
    a = _fit(v, t)
    mse = float(np.mean((a * v - t) ** 2))
    data_range = float(t.max() - t.min())
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def ssim3d(volume: np.ndarray, truth: np.ndarray, region: Region | None = None) -> float:
    """Mean 3D structural similarity after the scale fit.

    Gaussian window of sigma 1.5 voxels (11^3 support) as in Wang et al. (2004), with the
    truth's range in the region as the data range. The region must be at least 11 voxels
    along each axis.
    """
    from skimage.metrics import structural_similarity

    v, t = _crop(volume, truth, region)
    if min(t.shape) < 11:
        raise ValueError(f"the scoring region {t.shape} is smaller than the 11^3 SSIM window")
    a = _fit(v, t)
    return float(
        structural_similarity(
            a * v, t, data_range=float(t.max() - t.min()), gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False,
        )
    )


def correlation(volume: np.ndarray, truth: np.ndarray, region: Region | None = None) -> float:
    """Pearson correlation coefficient between volume and truth inside the region.

    It is invariant to the scale fit (and to any offset), so it is reported as is.
    """
    v, t = _crop(volume, truth, region)
    v = v - v.mean()
    t = t - t.mean()
    denom = float(np.sqrt(np.sum(v * v) * np.sum(t * t)))
    return float(np.sum(v * t)) / denom if denom > 0 else 0.0


def _fit(v: np.ndarray, t: np.ndarray) -> float:
    denom = float(np.sum(v * v))
    return float(np.sum(v * t)) / denom if denom > 0 else 0.0


def _crop(
    volume: np.ndarray, truth: np.ndarray, region: Region | None
) -> tuple[np.ndarray, np.ndarray]:
    volume = np.asarray(volume, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if volume.shape != truth.shape:
        raise ValueError(f"volume {volume.shape} and truth {truth.shape} differ in shape")
    if region is None:
        region = particle_region(truth) if truth.ndim == 3 else (slice(None),) * truth.ndim
    return volume[region], truth[region]
