"""The training data of the denoisers of step a: batches, the loss of every scheme, and
inference (:func:`edxtomo.deep.denoise_projections` describes the schemes)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edxtomo.deep.noise import white_noise_std
from edxtomo.deep.pairs import (
    gaussian_blur,
    neighbour_pairs,
    recorrupt,
    split_counts,
    split_frames,
    subsample,
)
from edxtomo.deep.schemes import COUNT_SCHEMES, FLOAT_SCHEMES
from edxtomo.deep.unet import apply_tiled
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import TiltSeries
from edxtomo.options import DenoiseOptions
from edxtomo.tomo.slabs import device_budget

PER_TARGET = (0, 2, 3)
"""The axes a training loss averages over, ``(batch, ny, nx)``: one loss per target map."""

RECORRUPTION_ALPHA = 0.5
"""``alpha`` of the recorrupted pairs ``(y + alpha z, y - z / alpha)``, Pang et al.'s choice:
the input carries ``1 + alpha^2`` times the maps' noise variance, the target ``1 + alpha^-2``."""

RECORRUPTION_SHARE = 1 / (1 + RECORRUPTION_ALPHA**2)
"""Share ``c`` of the measured noise covariance ``Sigma`` that the recorruption noise ``z``
carries. With ``z`` of ``c Sigma``, a linear denoiser fitted to the pairs is, per frequency of
signal power ``S`` and noise power ``N``, ``H = (S + (1 - c) N) / (S + N + alpha^2 c N)``.
``c = 1`` (Pang et al.) gives the Wiener filter of the noisier input ``(1 + alpha^2) N``,
which over-smooths the maps; ``c = 1 / (1 + alpha^2 S / (S + N))`` gives the maps' own
Wiener filter ``S / (S + N)``, and ``1 / (1 + alpha^2)`` is its limit where the signal
dominates (where noise dominates, ``H`` keeps ``(1 - c) / (1 + alpha^2 c)``, 1/6 of the noise
amplitude). Measured on the 32 px test specimen (seeds 0-4): the thin S shell +0.04 to
+0.40 dB, In -0.08 to -0.35 dB, Se -0.18 to +0.25 dB against ``c = 1``."""


@dataclass
class DenoiseData:
    """Training data of the denoisers (one network, or one grouped module of a network per
    element), on the device.

    ``values``: per element, counts ``(n_tilt, n_el, ny, nx)``, frames ``(n_tilt, n_el,
    n_frame, ny, nx)``, or normalised floats; the first ``n_targets`` elements are the ones
    predicted, the others guide (a grouped module's guides are the same elements as
    measured). ``scale``: per element, the mean count per
    pixel (count schemes) or the standard deviation (floats), ``(n_el,)``. ``haadf``:
    normalised ``(n_tilt, 1, ny, nx)`` or None. ``blur_px``: sigma (px) of the filter the
    float maps' noise went through; ``deconvolve``: fit the output blurred by it.
    ``noise_std``: ``recorrupted``, the standard deviation per pixel of the white noise that
    the recorruption noise is drawn from before that filter (the measured one times
    ``sqrt(RECORRUPTION_SHARE)``), in the normalised units, like ``values``.
    """

    scheme: str
    values: torch.Tensor
    scale: torch.Tensor
    haadf: torch.Tensor | None
    n_targets: int = 0
    radius: int = 0
    blur_px: float = 0.0
    deconvolve: bool = False
    noise_std: torch.Tensor | None = None

    @classmethod
    def from_series(cls, series: TiltSeries, scheme: str, use_haadf: bool,
                    dev: torch.device) -> DenoiseData:
        stacks = []
        for name in series.channels:
            if not np.all(np.isfinite(series.channels[name])):
                raise EdxtomoInputError(f"the {name} maps hold NaN or infinite values")
        for element in series.elements:
            data = series.channels[element] if scheme == "frames" else series.summed(element)
            stacks.append(np.asarray(data, dtype=np.float32))
        values = torch.as_tensor(np.stack(stacks, axis=1), device=dev)
        if scheme in COUNT_SCHEMES:
            dims = (0, 2, 3, 4) if scheme == "frames" else (0, 2, 3)
            scale = values.mean(dim=dims)
            if scheme == "frames":
                scale = scale * values.shape[2]
        else:
            scale = values.std(dim=(0, 2, 3))
            values = values / torch.where(scale > 0, scale, 1.0).view(1, -1, 1, 1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        haadf = None
        if use_haadf and series.haadf is not None:
            h = np.asarray(series.summed("HAADF"), dtype=np.float32)
            low, high = np.percentile(h, [1, 99.9])
            h = ((h - low) / max(high - low, 1e-12)).astype(np.float32)
            haadf = torch.as_tensor(h, device=dev)[:, None]
        return cls(scheme, values, scale, haadf)

    def for_network(self, targets: list[int], guides: list[int]) -> DenoiseData:
        """The data of a network predicting ``targets`` with ``guides`` as extra inputs."""
        order = targets + guides
        return DenoiseData(self.scheme, self.values[:, order], self.scale[order], self.haadf,
                     len(targets), self.radius, self.blur_px, self.deconvolve,
                     None if self.noise_std is None else self.noise_std[:, order])

    def white_noise_std(self) -> torch.Tensor:
        """Per element, :func:`~edxtomo.deep.noise.white_noise_std` of the normalised maps
        for a filter of ``blur_px``, ``(n_tilt, n_el, ny, nx)``."""
        maps = self.values.cpu().numpy()
        std = np.stack([white_noise_std(maps[:, i], self.blur_px)
                        for i in range(maps.shape[1])], axis=1)
        return torch.as_tensor(std.astype(np.float32), device=self.values.device)

    @property
    def in_channels(self) -> int:
        return len(self.scale) + (0 if self.haadf is None else 1)

    def _inputs(self, targets: torch.Tensor, guides: torch.Tensor,
                haadf: torch.Tensor | None) -> torch.Tensor:
        """Network input: target maps, guiding elements (summed over frames), HAADF."""
        if self.scheme == "frames":
            guides = guides.sum(dim=2)
        if self.scheme in COUNT_SCHEMES:  # float maps are normalised already
            guides = guides / self.scale[self.n_targets:].view(1, -1, 1, 1)
        return torch.cat([targets, guides] + ([] if haadf is None else [haadf]), dim=1)

    def _split(self, counts: torch.Tensor, g: torch.Generator) -> tuple:
        """Two independent halves and their dose fractions ``(a, fa, b, fb)``."""
        if self.scheme == "binomial":
            a, b = split_counts(counts, g)
            return a, 0.5, b, 0.5
        return split_frames(counts, g)

    def _batch(self, g: torch.Generator, opts: DenoiseOptions):
        """A random batch of tilts, cropped and flipped alike in every channel."""
        n_tilt = self.values.shape[0]
        tilts = torch.randperm(n_tilt, generator=g, device=g.device)[: opts.batch_size]
        ny, nx = self.values.shape[-2:]
        py, px = min(opts.patch_px, ny), min(opts.patch_px, nx)
        if self.scheme == "neighbor2neighbor":
            py, px = py - py % 2, px - px % 2
        oy = int(torch.randint(ny - py + 1, (1,), generator=g, device=g.device))
        ox = int(torch.randint(nx - px + 1, (1,), generator=g, device=g.device))
        flips = (torch.rand(2, generator=g, device=g.device) < 0.5).tolist()
        dims = [d for d, flip in zip((-2, -1), flips, strict=True) if flip]

        def crop(t):
            if t is None:
                return None
            t = t[tilts][..., oy:oy + py, ox:ox + px]
            return torch.flip(t, dims) if dims else t

        return crop(self.values), crop(self.haadf), crop(self.noise_std)

    def loss(self, model: torch.nn.Module, g: torch.Generator,
             opts: DenoiseOptions) -> torch.Tensor:
        """The training loss of every target map on one random batch, ``(n_targets,)``."""
        n = self.n_targets
        values, haadf, noise_std = self._batch(g, opts)
        if self.scheme == "neighbor2neighbor":
            return self._n2n_loss(model, values, haadf, g, opts.n2n_gamma)
        if self.scheme == "recorrupted":
            return self._recorrupted_loss(model, values, haadf, noise_std, g)
        if self.scheme == "blindspot":
            return self._blindspot_loss(model, values, haadf, g)
        a, fa, b, fb = self._split(values[:, :n], g)
        scale = self.scale[:n].view(1, -1, 1, 1)
        rate = model(self._inputs(a / (fa * scale), values[:, n:], haadf))
        target = b / (fb * scale)
        # Poisson negative log-likelihood of b given the rate, per unit of expected count
        return torch.mean(rate - target * torch.log(rate + 1e-8), dim=PER_TARGET)

    def _n2n_loss(self, model, values, haadf, g, gamma):
        n = self.n_targets
        index = neighbour_pairs(values, g)
        first, second = (subsample(values, i) for i in index)
        h_first = None if haadf is None else subsample(haadf, index[0])
        with torch.no_grad():
            full = model(self._inputs(values[:, :n], values[:, n:], haadf))
        out = model(self._inputs(first[:, :n], first[:, n:], h_first))
        residual = out - second[:, :n]
        consistency = residual - (subsample(full, index[0]) - subsample(full, index[1]))
        return (torch.mean(residual**2, dim=PER_TARGET)
                + gamma * torch.mean(consistency**2, dim=PER_TARGET))

    def _recorrupted_loss(self, model, values, haadf, noise_std, g):
        """Squared error between the output for ``y + alpha z`` (blurred by the measured
        filter with ``deconvolve``) and ``y - z / alpha``; only the targets are recorrupted:
        the noise of the other elements and of the HAADF is independent of theirs."""
        n = self.n_targets
        noisy, target = recorrupt(values[:, :n], noise_std[:, :n], self.blur_px,
                                  RECORRUPTION_ALPHA, g)
        out = model(self._inputs(noisy, values[:, n:], haadf))
        return torch.mean((self._blurred(out) - target) ** 2, dim=PER_TARGET)

    def _blurred(self, out: torch.Tensor) -> torch.Tensor:
        """The output as the maps saw it: blurred by the measured filter with ``deconvolve``."""
        return gaussian_blur(out, self.blur_px) if self.deconvolve else out

    def _blindspot_predict(self, model, values, haadf, budget):
        """J-invariant prediction: every pixel predicted with its own block hidden, as in
        training (centres on a grid of step ``2 (2r+1)``, one pass per grid offset)."""
        n = self.n_targets
        targets = values[:, :n]
        b, _, ny, nx = targets.shape
        side = 2 * self.radius + 1
        step = 2 * side
        mean = targets.mean(dim=(2, 3), keepdim=True).expand_as(targets)
        result = torch.zeros_like(targets)
        yy = torch.arange(ny, device=targets.device).view(-1, 1)
        xx = torch.arange(nx, device=targets.device).view(1, -1)
        for oy in range(min(step, ny)):
            for ox in range(min(step, nx)):
                centres = (((yy - oy) % step == 0) & ((xx - ox) % step == 0)).float()
                hidden = torch.nn.functional.max_pool2d(centres[None, None], side, 1,
                                                        self.radius) > 0
                masked = torch.where(hidden, mean, targets)
                out = apply_tiled(model, self._inputs(masked, values[:, n:], haadf), budget)
                result = result + centres * out
        return result

    def _blindspot_loss(self, model, values, haadf, g):
        """Squared error at random centres whose ``(2r+1)^2`` block the network did not see.

        About a quarter of the pixels are hidden (centres drawn with probability
        ``0.25 / (2r+1)^2``), each set to the mean of its map.
        Only the target elements are hidden: the noise of the other elements and of the
        HAADF is independent of theirs.
        """
        n = self.n_targets
        targets = values[:, :n]
        b, _, ny, nx = targets.shape
        side = 2 * self.radius + 1
        centres = torch.rand(b, 1, ny, nx, generator=g, device=g.device) < 0.25 / side**2
        hidden = torch.nn.functional.max_pool2d(centres.float(), side, 1, self.radius) > 0
        fill = targets.mean(dim=(2, 3), keepdim=True).expand_as(targets)
        masked = torch.where(hidden, fill, targets)
        out = self._blurred(model(self._inputs(masked, values[:, n:], haadf)))
        weight = centres.expand_as(out).float()
        return (torch.sum(weight * (out - targets) ** 2, dim=PER_TARGET)
                / torch.clamp(weight.sum(dim=PER_TARGET), min=1.0))

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, g: torch.Generator,
                opts: DenoiseOptions) -> np.ndarray:
        """Denoised full-dose maps of the targets, ``(n_tilt, n_targets, ny, nx)``, float32.

        In input units (counts, or the float maps' units).
        """
        n = self.n_targets
        scale = self.scale[:n].view(1, -1, 1, 1)
        # the network runs in tiles that fit the device; the batches (and so the random
        # splits) stay those of batch_size, whatever the memory
        budget = device_budget(self.values.device, 0, None)
        out = []
        for start in range(0, self.values.shape[0], max(opts.batch_size, 1)):
            values = self.values[start:start + opts.batch_size]
            haadf = None if self.haadf is None else self.haadf[start:start + opts.batch_size]
            if self.scheme == "blindspot":
                out.append(self._blindspot_predict(model, values, haadf, budget) * scale)
                continue
            if self.scheme == "recorrupted":
                std = self.noise_std[start:start + opts.batch_size, :n]
                total = sum(apply_tiled(model, self._inputs(
                    recorrupt(values[:, :n], std, self.blur_px, RECORRUPTION_ALPHA, g)[0],
                    values[:, n:], haadf), budget) for _ in range(opts.inference_splits))
                out.append(total / opts.inference_splits * scale)
                continue
            if self.scheme in FLOAT_SCHEMES:
                inputs = self._inputs(values[:, :n], values[:, n:], haadf)
                out.append(apply_tiled(model, inputs, budget) * scale)
                continue
            total = 0.0
            count = 0
            for _ in range(opts.inference_splits):
                a, fa, b, fb = self._split(values[:, :n], g)
                halves = [(a, fa), (b, fb)] if fa == fb else [(a, fa)]
                for half, fraction in halves:
                    inputs = self._inputs(half / (fraction * scale), values[:, n:], haadf)
                    total = total + apply_tiled(model, inputs, budget)
                    count += 1
            out.append(total / count * scale)
        return torch.cat(out).cpu().numpy().astype(np.float32)
