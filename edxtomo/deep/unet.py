"""A small 2D U-Net for projection images.

Two pooling levels of 3x3 convolutions (no normalisation layers: the batches are a handful
of tilts, and batch statistics would make training and inference differ). The receptive
field of a depth-2 net is about 40 px, several particle diameters at the demo scale, which
is what the denoiser needs to pool counts over a particle; deeper nets did not help on
64-256 px projections and cost CPU time. The last 1x1 convolution starts at zero, so a
residual net starts as the identity.

``groups`` puts several independent networks side by side in one module: every convolution
is grouped, so network ``k`` owns channels ``k * c, ..., (k + 1) * c - 1`` of every layer and
never sees another's. One step of the grouped module costs one step's kernel launches
instead of one per network, which is what the denoiser's small networks are bound by on a
GPU (``bench/README.md``). Every parameter's first axis is group-major (``groups`` blocks),
which :func:`edxtomo.deep.training.clip_per_group` relies on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional


class _ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels * groups, out_channels * groups, 3, padding=1, groups=groups),
            nn.LeakyReLU(0.1),
            nn.Conv2d(out_channels * groups, out_channels * groups, 3, padding=1,
                      groups=groups),
            nn.LeakyReLU(0.1),
        )


class UNet(nn.Module):
    """U-Net mapping ``(batch, groups * in_channels, ny, nx)`` to ``(batch, groups *
    out_channels, ny, nx)``: ``groups`` independent networks, each reading its own block of
    ``in_channels`` input channels and writing its block of ``out_channels``.

    Parameters
    ----------
    in_channels, out_channels : int
        Per network.
    width : int
        Feature maps at full resolution, per network; doubled at each level.
    depth : int
        Number of 2x2 max-pooling levels. Inputs are reflect-padded to a multiple of
        ``2**depth`` and cropped back, so any image size works.
    groups : int
        Independent networks side by side (module docstring).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32,
                 depth: int = 2, groups: int = 1) -> None:
        super().__init__()
        self.depth, self.groups = depth, groups
        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        channels = in_channels
        for w in widths:
            self.down.append(_ConvBlock(channels, w, groups))
            channels = w
        self.up = nn.ModuleList(
            _ConvBlock(widths[level + 1] + widths[level], widths[level], groups)
            for level in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0] * groups, out_channels * groups, 1, groups=groups)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # An output pixel reads inputs up to 7 * 2**depth - 5 px away: 2 convolutions per
        # level down (2 * (2**(depth+1) - 1)) and up (2 * (2**depth - 1)), plus the pooling
        # grid (2**depth - 1); measured from the gradient's support for depths 1-3.
        self.margin_px = 7 * 2**depth - 5
        # Activations held at once per pixel (no gradients): at full resolution the skip,
        # the upsampled map, their concatenation and two outputs, about 8 x width channels;
        # the coarser levels add a third; 4 bytes each, and the input: 4 (11 w + in + out),
        # 728 B at width 16 against 650 B measured (peak RSS of a 2 x 512^2 batch, CPU).
        # Half as much again for convolution workspaces (cuDNN).
        self.bytes_per_px = 6 * groups * (11 * width + in_channels + out_channels)

    def _joined(self, upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Each network's upsampled maps beside its own skip maps (channels stay grouped)."""
        n, _, ny, nx = skip.shape
        return torch.cat([upsampled.view(n, self.groups, -1, ny, nx),
                          skip.view(n, self.groups, -1, ny, nx)], dim=2).view(n, -1, ny, nx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ny, nx = x.shape[-2:]
        multiple = 2**self.depth
        pad_y, pad_x = -ny % multiple, -nx % multiple
        if pad_y or pad_x:
            x = functional.pad(x, (0, pad_x, 0, pad_y), mode="reflect")
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = functional.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(self._joined(x, skip))
        return self.head(x)[..., :ny, :nx]


class DenoiserNet(nn.Module):
    """U-Net denoisers of element maps: the first ``n_elements`` input channels are the maps.

    Each net predicts a correction to a fixed smoothing of its maps, so that training
    starts from a sensible denoiser instead of a constant (fewer steps on the CPU):

    * counts: the output is a rate, ``softplus(unet(x) + softplus^-1(gauss(maps)))``,
      positive, and equal to the Gaussian-smoothed maps while the head is zero;
    * floats: the output is ``maps + unet(x)``, the identity at the start.

    One module holds ``len(inputs)`` independent networks (:class:`UNet`'s ``groups``):
    network ``k`` reads the input channels ``inputs[k]`` and predicts the ``k``-th block of
    ``n_elements / len(inputs)`` maps.

    Parameters
    ----------
    n_elements : int
        Maps predicted, all networks together.
    inputs : sequence of sequence of int
        Per network, the input channels it reads (the same number for every network).
    width, depth : int
        U-Net size, per network.
    counts : bool
        Rates of counts (True) or signed float maps (False).
    sigma_px : float
        Standard deviation of the Gaussian starting point, in pixels.
    """

    def __init__(self, n_elements: int, inputs: Sequence[Sequence[int]], width: int = 24,
                 depth: int = 2, counts: bool = True, sigma_px: float = 1.5) -> None:
        super().__init__()
        groups = len(inputs)
        if n_elements % groups or len({len(channels) for channels in inputs}) != 1:
            raise ValueError(f"{groups} networks cannot share {n_elements} maps, or read "
                             f"unequal numbers of channels: {inputs}")
        self.n_elements, self.counts = n_elements, counts
        self.register_buffer("gather", torch.tensor([c for cs in inputs for c in cs]),
                             persistent=False)
        self.unet = UNet(len(inputs[0]), n_elements // groups, width, depth, groups)
        radius = max(int(3 * sigma_px + 0.5), 1)
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1.0) / sigma_px) ** 2)
        self.register_buffer("taps", taps / taps.sum(), persistent=False)

    def smooth(self, maps: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian filter of every channel, edges reflected."""
        c, r = maps.shape[1], self.taps.numel() // 2
        x = functional.pad(maps, (r, r, r, r), mode="reflect")
        x = functional.conv2d(x, self.taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        return functional.conv2d(x, self.taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = x[:, : self.n_elements]
        correction = self.unet(x.index_select(1, self.gather))
        if not self.counts:
            return maps + correction
        start = self.smooth(maps).clamp_min(1e-3)
        # softplus^-1(y) = log(expm1(y)), which is y to float32 precision beyond y = 20
        # (where expm1 would overflow for very sparse maps scaled to unit mean)
        inverse = torch.where(start > 20, start, torch.log(torch.expm1(start.clamp_max(20))))
        return functional.softplus(correction + inverse)

    @property
    def margin_px(self) -> int:
        """Reach of an output pixel into the input: the U-Net's or the smoothing's."""
        return max(self.unet.margin_px, self.taps.numel() // 2)

    @property
    def bytes_per_px(self) -> int:
        """Activation bytes per pixel at inference (the U-Net's, plus the gathered input
        and the smoothing)."""
        return self.unet.bytes_per_px + 4 * self.gather.numel() + 6 * 4 * self.n_elements

    @property
    def depth(self) -> int:
        return self.unet.depth

    @property
    def groups(self) -> int:
        return self.unet.groups


def apply_tiled(net: UNet | DenoiserNet, x: torch.Tensor, budget_bytes: int) -> torch.Tensor:
    """``net(x)`` in sub-batches and overlapping tiles whose activations fit ``budget_bytes``.

    The result equals ``net(x)`` to float rounding: a tile's output is kept only where its
    receptive field (``net.margin_px``) lies inside the tile, and tiles start on the pooling
    grid (multiples of ``2**depth``), so every kept pixel sees exactly what it sees in the
    whole image. Tiles at the image's edges end at the edge, as the whole image does.

    Parameters
    ----------
    net : UNet or DenoiserNet
    x : torch.Tensor, shape (batch, in_channels, ny, nx)
    budget_bytes : int
        Device memory for the activations of one call.

    Returns
    -------
    torch.Tensor, shape (batch, out_channels, ny, nx)
    """
    batch, _, ny, nx = x.shape
    grid = 2**net.depth
    margin = -(-net.margin_px // grid) * grid
    per_view = net.bytes_per_px * ny * nx
    if per_view <= budget_bytes:
        views = max(1, budget_bytes // per_view)
        return torch.cat([net(x[i:i + views]) for i in range(0, batch, views)])
    side = int((max(budget_bytes, 0) / net.bytes_per_px) ** 0.5) - 2 * margin
    tile = max(grid, side // grid * grid)
    out = None
    for i in range(batch):
        for y0 in range(0, ny, tile):
            for x0 in range(0, nx, tile):
                ya, xa = max(0, y0 - margin), max(0, x0 - margin)
                part = net(x[i:i + 1, :, ya:min(ny, y0 + tile + margin),
                             xa:min(nx, x0 + tile + margin)])
                if out is None:
                    out = part.new_empty((batch, part.shape[1], ny, nx))
                out[i, :, y0:y0 + tile, x0:x0 + tile] = part[
                    0, :, y0 - ya:y0 - ya + tile, x0 - xa:x0 - xa + tile]
    return out
