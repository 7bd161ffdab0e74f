"""View enrichment: learn "model-based reprojection -> measurement", apply it at dense angles.

The model-based volume is reprojected at the measured angles. A residual U-Net (output =
input + correction, the correction starting at zero) learns to map those reprojections onto
the denoised measured projections, all elements together. The training pairs come from the
measurement alone. The net is then applied to reprojections of the same volume at dense
angles (1 degree steps over the measured range), giving views that no one measured but that
carry what the model-based reconstruction lost (contrast of thin shells, TV staircasing).

Han et al. used a pix2pix U-Net with a PatchGAN discriminator. The adversarial term is left
out here: with 5-13 training views it can invent texture at the dense angles, and an l1 loss
already gives the median-consistent mapping that the final reconstruction averages anyway.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from edxtomo.deep.training import (
    deterministic,
    fingerprint,
    make_generator,
    seeded_module,
    train,
)
from edxtomo.deep.unet import UNet, apply_tiled
from edxtomo.errors import EdxtomoInputError
from edxtomo.options import EnrichOptions, parse_options
from edxtomo.options.deep import budget_name, fill_budget
from edxtomo.tomo.device import resolve_device
from edxtomo.tomo.projector import Projector
from edxtomo.tomo.slabs import device_budget

log = logging.getLogger(__name__)


def dense_angles(angles_deg: np.ndarray, step_deg: float = 1.0) -> np.ndarray:
    """Angles from the smallest to the largest measured one in steps of ``step_deg``.

    Both ends are included; the step is shrunk slightly when the range is not a multiple.
    """
    angles_deg = np.asarray(angles_deg, dtype=float)
    if step_deg <= 0:
        raise EdxtomoInputError(f"the dense angular step must be positive, got {step_deg}")
    low, high = float(angles_deg.min()), float(angles_deg.max())
    n = max(int(np.ceil((high - low) / step_deg - 1e-9)), 1) + 1
    return np.linspace(low, high, n)


def enrich_views(
    volumes: np.ndarray,
    measured: np.ndarray,
    angles_deg: np.ndarray,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    options: EnrichOptions | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    memory_gib: float | None = None,
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Train the enrichment net on the measured views and apply it at dense angles.

    Parameters
    ----------
    volumes : ndarray, shape (c, nz, ny, nx)
        Model-based reconstruction, one channel per element.
    measured : ndarray, shape (c, n_tilt, ny, nx)
        Denoised, aligned projections (net counts) at ``angles_deg``.
    angles_deg : ndarray, shape (n_tilt,)
        Measured tilt angles in degrees.
    seed : int
        Seeds the initialisation, batches, crops and flips.
    device : {"auto", "cpu", "cuda"} or torch.device
    options : EnrichOptions, optional
        Default: ``EnrichOptions()``; a step count left at None comes from the ``auto``
        budget of the device.
    checkpoint_dir : path-like, optional
        Where ``enrich.pt`` is kept; an interrupted run resumes from it.
    progress : bool
    memory_gib : float, optional
        Device memory (GiB) to plan the reprojections and the network's tiles for; None:
        what is free. The volume stays in host memory and is projected in y slabs.

    Returns
    -------
    dense_angles_deg : ndarray, shape (n_dense,)
    enriched : ndarray, shape (c, n_dense, ny, nx), float32
        Enriched views in the units of ``measured``.
    losses : list of float
        Training loss per step.
    """
    dev = resolve_device(device)
    opts = fill_budget(parse_options(EnrichOptions, options, "reconstruct.deep.enrich"),
                       "enrich", budget_name("auto", dev.type))
    volumes = np.asarray(volumes, np.float32)
    measured_t = torch.as_tensor(np.asarray(measured, np.float32), device=dev)
    c, nz, ny, nx = volumes.shape
    if measured_t.shape != (c, len(angles_deg), ny, nx):
        raise EdxtomoInputError(
            f"measured views {tuple(measured_t.shape)} do not match {c} channels, "
            f"{len(angles_deg)} angles and {ny} x {nx} px of the volume"
        )
    budget = device_budget(dev, 0, memory_gib)
    reprojected = _project_slabs(volumes, angles_deg, dev, budget)
    scale = measured_t.abs().flatten(1).amax(dim=1).clamp_min(1e-12).view(1, c, 1, 1)
    # (n_tilt, c, ny, nx): views as the batch axis, elements as channels
    inputs = reprojected.permute(1, 0, 2, 3) / scale
    targets = measured_t.permute(1, 0, 2, 3) / scale
    model = seeded_module(lambda: UNet(c, c, opts.width, opts.depth), seed, dev)
    distance = torch.nn.functional.l1_loss if opts.loss == "l1" else torch.nn.functional.mse_loss

    def loss_fn(net: torch.nn.Module, g: torch.Generator) -> torch.Tensor:
        x, y = _random_views(inputs, targets, g, opts)
        return distance(x + net(x), y)

    key = fingerprint(inputs, targets, seed=seed,
                      options={k: v for k, v in opts.model_dump().items()
                               if k not in ("step_deg", "checkpoint_every")})
    checkpoint = None if checkpoint_dir is None else Path(checkpoint_dir) / "enrich.pt"
    [losses] = train(model, loss_fn, make_generator(seed, dev), steps=opts.steps, lr=opts.lr,
                     name="view enrichment", key=key, checkpoint=checkpoint,
                     checkpoint_every=opts.checkpoint_every, progress=progress)

    dense = dense_angles(angles_deg, opts.step_deg)
    views = _project_slabs(volumes, dense, dev, budget).permute(1, 0, 2, 3) / scale
    # the views, the net's output and their sum stay on the device beside the tiles
    net_budget = device_budget(dev, 0, memory_gib) - 3 * views.numel() * 4
    with torch.no_grad(), deterministic():
        enriched = ((views + apply_tiled(model, views, net_budget)) * scale).permute(1, 0, 2, 3)
    log.info("view enrichment: %d measured views -> %d views at %.3g deg steps", len(angles_deg),
             len(dense), dense[1] - dense[0] if len(dense) > 1 else 0.0)
    return dense, enriched.cpu().numpy(), losses


def _project_slabs(volumes: np.ndarray, angles_deg: np.ndarray, dev: torch.device,
                   budget_bytes: int) -> torch.Tensor:
    """Projections ``(c, n, ny, nx)`` on ``dev`` of host volumes ``(c, nz, ny, nx)``, moved
    and projected a slab of y slices at a time (the volume, its column copy and the
    projections of a slab within ``budget_bytes``)."""
    c, nz, ny, nx = volumes.shape
    projector = Projector(angles_deg, nx, nz=nz, device=dev)
    out = torch.empty((c, len(angles_deg), ny, nx), device=dev)
    per_slice = 4 * c * (2 * nz * nx + 2 * len(angles_deg) * nx)
    slab = max(1, min(ny, budget_bytes // per_slice))
    with torch.no_grad():
        for y0 in range(0, ny, slab):
            part = torch.from_numpy(np.ascontiguousarray(volumes[:, :, y0:y0 + slab]))
            out[:, :, y0:y0 + slab] = projector.forward(part.to(dev))
    return out


def _random_views(inputs: torch.Tensor, targets: torch.Tensor, g: torch.Generator,
                  opts: EnrichOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of views, cropped and flipped alike in input and target."""
    n, _, ny, nx = inputs.shape
    views = torch.randperm(n, generator=g, device=g.device)[: opts.batch_size]
    py, px = min(opts.patch_px, ny), min(opts.patch_px, nx)
    oy = int(torch.randint(ny - py + 1, (1,), generator=g, device=g.device))
    ox = int(torch.randint(nx - px + 1, (1,), generator=g, device=g.device))
    flips = (torch.rand(2, generator=g, device=g.device) < 0.5).tolist()
    dims = [d for d, flip in zip((-2, -1), flips, strict=True) if flip]
    x = inputs[views, :, oy:oy + py, ox:ox + px]
    y = targets[views, :, oy:oy + py, ox:ox + px]
    return (torch.flip(x, dims), torch.flip(y, dims)) if dims else (x, y)
