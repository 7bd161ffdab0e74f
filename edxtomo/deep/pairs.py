"""Training pairs drawn from the data itself: binomial splits of counts, disjoint frame
subsets, neighbouring-pixel sub-images, recorrupted pairs, and the Gaussian blur of the
measured noise filter."""

from __future__ import annotations

import numpy as np
import torch


def gaussian_blur(images: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian filter of ``(b, c, ny, nx)`` images, reflecting at the edges."""
    if sigma_px <= 0:
        return images
    radius = max(1, int(np.ceil(3 * sigma_px)))
    radius = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-(x**2) / (2 * sigma_px**2))
    k = k / k.sum()
    b, c, ny, nx = images.shape
    flat = images.reshape(b * c, 1, ny, nx)
    flat = torch.nn.functional.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = torch.nn.functional.conv2d(flat, k.view(1, 1, -1, 1))
    flat = torch.nn.functional.conv2d(flat, k.view(1, 1, 1, -1))
    return flat.reshape(b, c, ny, nx)


def split_counts(counts: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Binomial thinning: each count goes to half A or B with probability 1/2.

    If ``counts`` is Poisson with mean ``m``, the halves are *independent* Poisson images of
    mean ``m / 2`` each (the thinning property), and ``a + b == counts`` exactly.

    Parameters
    ----------
    counts : torch.Tensor
        Non-negative integer counts (any shape, float dtype).
    generator : torch.Generator
        On the device of ``counts``.
    """
    a = torch.binomial(counts, torch.full_like(counts, 0.5), generator=generator)
    return a, counts - a


def split_frames(frames: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, float, torch.Tensor, float]:
    """Split the frames of every tilt into two disjoint random subsets and sum each.

    Parameters
    ----------
    frames : torch.Tensor, shape (n_tilt, n_channel, n_frame, ny, nx)
    generator : torch.Generator

    Returns
    -------
    a, fraction_a, b, fraction_b
        The sums ``(n_tilt, n_channel, ny, nx)`` over ``n_frame // 2`` frames and over the
        rest, and the dose fraction each holds.
    """
    n_tilt, n_frame = frames.shape[0], frames.shape[2]
    n_a = n_frame // 2
    order = torch.rand(n_tilt, n_frame, generator=generator, device=frames.device)
    in_a = (order.argsort(dim=1).argsort(dim=1) < n_a).to(frames.dtype)
    a = torch.einsum("tefyx,tf->teyx", frames, in_a)
    return a, n_a / n_frame, frames.sum(dim=2) - a, 1 - n_a / n_frame


def neighbour_pairs(values: torch.Tensor, g: torch.Generator) -> tuple:
    """Per 2x2 cell, a random pixel and a random edge-neighbour of it (indices 0..3)."""
    b, _, ny, nx = values.shape
    first = torch.randint(4, (b, 1, ny // 2, nx // 2), generator=g, device=values.device)
    # in a 2x2 cell, index ^ 1 is the horizontal neighbour and index ^ 2 the vertical one
    flip = 1 + torch.randint(2, first.shape, generator=g, device=values.device)
    return first, torch.bitwise_xor(first, flip)


def subsample(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick pixel ``index`` of every 2x2 cell: ``(b, c, ny, nx) -> (b, c, ny/2, nx/2)``."""
    b, c, ny, nx = values.shape
    cells = values.reshape(b, c, ny // 2, 2, nx // 2, 2).permute(0, 1, 2, 4, 3, 5)
    cells = cells.reshape(b, c, ny // 2, nx // 2, 4)
    return torch.gather(cells, 4, index.expand(b, c, -1, -1).unsqueeze(-1)).squeeze(-1)


def recorrupt(values: torch.Tensor, white_std: torch.Tensor, blur_px: float, alpha: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Recorrupted-to-Recorrupted pair (Pang et al., CVPR 2021) for correlated noise.

    With ``z = G_w * (white_std * e)``, ``e`` white of unit variance (noise of the maps'
    own covariance ``Sigma``: signal-dependent, filtered by a Gaussian of ``w = blur_px``),
    the pair is ``(values + alpha z, values - z / alpha)``. Their noises ``n + alpha z``
    and ``n - z / alpha`` have the cross-covariance ``Sigma - Sigma = 0``, whatever the
    correlation of ``n``: an L2 loss between them is unbiased.

    Parameters
    ----------
    values, white_std : torch.Tensor, shape (b, c, ny, nx)
        Maps and, per pixel, the standard deviation of the white noise before the filter
        (:func:`edxtomo.deep.noise.white_noise_std`), in the units of ``values``.
    blur_px : float
        Sigma (px) of the filter.
    alpha : float
        Recorruption strength (> 0).
    generator : torch.Generator
        On the device of ``values``.

    Returns
    -------
    input, target : torch.Tensor, shape (b, c, ny, nx)
    """
    white = torch.randn(values.shape, generator=generator, device=values.device,
                        dtype=values.dtype)
    z = gaussian_blur(white * white_std, blur_px)
    return values + alpha * z, values - z / alpha
