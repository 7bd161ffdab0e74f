"""The operators of the model-based objectives: 3D forward differences, TV and Poisson KL.

All act on channel-batched tensors ``(c, nz, ny, nx)`` and return per-channel values.
"""

from __future__ import annotations

import torch

EPS = 1e-12


def gradient(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with a zero last difference: ``(c, nz, ny, nx) -> (c, 3, ...)``."""
    g = x.new_zeros((x.shape[0], 3, *x.shape[1:]))
    g[:, 0, :-1] = x[:, 1:] - x[:, :-1]
    g[:, 1, :, :-1] = x[:, :, 1:] - x[:, :, :-1]
    g[:, 2, :, :, :-1] = x[:, :, :, 1:] - x[:, :, :, :-1]
    return g


def gradient_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Exact adjoint of :func:`gradient` (minus the divergence)."""
    out = g.new_zeros((g.shape[0], *g.shape[2:]))
    out[:, :-1] -= g[:, 0, :-1]
    out[:, 1:] += g[:, 0, :-1]
    out[:, :, :-1] -= g[:, 1, :, :-1]
    out[:, :, 1:] += g[:, 1, :, :-1]
    out[:, :, :, :-1] -= g[:, 2, :, :, :-1]
    out[:, :, :, 1:] += g[:, 2, :, :, :-1]
    return out


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Isotropic TV per channel: ``(c, nz, ny, nx) -> (c,)``."""
    return gradient(x).pow(2).sum(dim=1).sqrt().flatten(1).sum(dim=1)


def kl_divergence(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Poisson negative log-likelihood up to a constant, ``>= 0``, per channel ``(c,)``.

    ``sum(z - y + y log(y / z))``, zero when ``z == y``.
    """
    z = z.clamp_min(EPS)
    ylogy = torch.where(y > 0, y * torch.log(y.clamp_min(EPS) / z), torch.zeros_like(y))
    return (z - y + ylogy).flatten(1).sum(dim=1)
