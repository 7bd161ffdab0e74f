"""Self-supervised denoising of the element projections, trained on the measurement itself.

Five schemes, chosen from the data (:func:`edxtomo.deep.schemes.choose_scheme`) and logged;
the pairs are drawn by :mod:`edxtomo.deep.pairs`:

``"frames"``
    The maps keep their frames ``(n_tilt, n_frame, ny, nx)``: each step splits the frames of
    every tilt at random into two disjoint halves. Sums over disjoint frames are independent
    Poisson images.
``"binomial"``
    Summed integer counts: every count goes to half A or half B with probability 1/2
    (binomial thinning), which gives two *independent* Poisson images of half the dose.
``"neighbor2neighbor"``
    Float maps that are not counts and whose noise is white: binomial splitting would be
    wrong, so two sub-images are drawn from neighbouring pixels of every 2x2 cell, with the
    regularised loss of Huang et al. (CVPR 2021).
``"recorrupted"``
    Float maps whose noise is spatially correlated (alignment interpolation, export filters),
    Recorrupted-to-Recorrupted (Pang et al., CVPR 2021): the noise covariance is measured
    from the maps (a Gaussian filter of the width the noise autocorrelation gives,
    :func:`edxtomo.deep.noise.correlation_sigma`, of white noise whose variance is affine in
    the local mean, :func:`edxtomo.deep.noise.white_noise_std`); noise ``z`` of that
    covariance, times :data:`RECORRUPTION_SHARE`, is drawn afresh each step and the network
    maps ``y + alpha z`` onto ``y - z / alpha`` (:func:`edxtomo.deep.pairs.recorrupt`).
    With ``z`` of the full covariance the two noises are uncorrelated and the L2 loss is
    unbiased without hiding any pixel, but the network learns the denoiser of the noisier
    input ``y + alpha z``; the share makes it, where the signal dominates, the denoiser of
    ``y`` itself. With ``deconvolve`` the output is blurred by the measured filter before the
    loss, so it undoes that filter. Inference averages the outputs of ``inference_splits``
    recorrupted inputs.
``"blindspot"``
    Float maps whose noise is spatially correlated (alignment interpolation, export filters:
    :func:`edxtomo.deep.noise.noise_autocorrelation`, correlation length ``L`` px). Neighbouring
    pixels then share noise, and Neighbor2Neighbor learns it as signal. Instead, random
    centres are hidden with a ``(2L+1)^2`` block around each (filled with pixels drawn at
    random from the same map) and the network predicts the centres from the rest: the pixels
    it sees are more than ``L`` px away, so their noise is independent of the target's
    (Noise2Self / Noise2Void with a mask wider than the correlation).

Float maps that are counts times a scale (``k * s``, :func:`edxtomo.deep.noise.count_scale`)
are turned back into counts and take a count scheme; the result is scaled back by ``s``.

For the count schemes the network sees half A (scaled to a full-dose rate), the HAADF and
the other elements, and is trained Noise2Noise-style to predict half B under a Poisson
likelihood; its output is the full-dose expected count rate. At inference it is fed fresh
splits of the *same* dose as in training (a net trained on half doses under-smooths full
counts) and the predictions of ``inference_splits`` splits, both halves each, are averaged.
The expected background under the line (``TiltSeries.background``) is subtracted from the
denoised gross counts, so the result is net counts, ready for reconstruction.

Denoising runs in the raw, unaligned frame: alignment interpolates, which turns counts into
fractions and couples neighbouring pixels. Apply the alignment to the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edxtomo.deep.noise import (
    correlation_sigma,
    recover_counts,
    white_noise_std,
)
from edxtomo.deep.pairs import (
    gaussian_blur,
    neighbour_pairs,
    recorrupt,
    split_counts,
    split_frames,
    subsample,
)
from edxtomo.deep.schemes import (
    COUNT_SCHEMES,
    FLOAT_SCHEMES,
    plan_denoising,
)
from edxtomo.deep.training import (
    deterministic,
    fingerprint,
    make_generator,
    seeded_module,
    train,
)
from edxtomo.deep.unet import DenoiserNet, apply_tiled
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import TiltSeries
from edxtomo.options import DenoiseOptions, parse_options
from edxtomo.options.deep import budget_name, fill_budget
from edxtomo.tomo.device import resolve_device
from edxtomo.tomo.slabs import device_budget

log = logging.getLogger(__name__)

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
class DenoiseResult:
    """Output of :func:`denoise_projections`.

    Attributes
    ----------
    projections : dict of str to ndarray
        Per element, denoised net counts (background removed), float32
        ``(n_tilt, ny, nx)`` in the raw (unaligned) frame, full dose.
    scheme : str
        The scheme that ran.
    losses : dict of str to list of float
        Training loss per step, per network (``"In+P+..."`` for a shared one).
    noise_correlation_px : int or None
        Correlation length of the float maps' noise that the float scheme stepped over
        (measured, or the ``correlation_px`` option); None for the count schemes.
    count_scale : dict of str to float
        Per element, the scale ``s`` of maps that were counts times ``s`` (1 for integer
        counts); empty for the float schemes.
    """

    projections: dict[str, np.ndarray]
    scheme: str
    losses: dict[str, list[float]] = field(default_factory=dict)
    noise_correlation_px: int | None = None
    count_scale: dict[str, float] = field(default_factory=dict)


def denoise_projections(
    series: TiltSeries,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    options: DenoiseOptions | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> DenoiseResult:
    """Denoise every element stack of a raw (unaligned) tilt series.

    Parameters
    ----------
    series : TiltSeries
        Extracted maps: gross counts (integers, optionally with frames) and their
        background, or float maps. The HAADF, when present, guides the network.
    seed : int
        Seeds the network initialisation and every split, crop and flip.
    device : {"auto", "cpu", "cuda"} or torch.device
    options : DenoiseOptions, optional
        Default: ``DenoiseOptions()``; a step count left at None comes from the ``auto``
        budget of the device.
    checkpoint_dir : path-like, optional
        Where to keep ``denoise_*.pt`` checkpoints; an interrupted run resumes from them.
    progress : bool
        Show a tqdm bar with the loss.

    Returns
    -------
    DenoiseResult
    """
    dev = resolve_device(device)
    opts = fill_budget(parse_options(DenoiseOptions, options, "reconstruct.deep.denoise"),
                       "denoise", budget_name("auto", dev.type))
    elements = series.elements
    if not elements:
        raise EdxtomoInputError("the tilt series has no element channel to denoise")
    plan = plan_denoising(series, opts.scheme, opts.correlation_px)
    scheme = plan.scheme
    scales = {e: plan.count_scale[e] for e in elements} if scheme in COUNT_SCHEMES else {}
    if scheme in COUNT_SCHEMES:
        recovered = {e: s for e, s in scales.items() if s != 1.0}
        if recovered:
            log.info("float maps of %s are counts times a scale (%s): denoising the recovered "
                     "counts", "+".join(recovered),
                     ", ".join(f"{e} {s:.6g}" for e, s in recovered.items()))
            series = TiltSeries(
                series.channels | {e: recover_counts(series.channels[e], s)
                                   for e, s in recovered.items()},
                series.angles_deg, series.pixel_size_nm, series.provenance,
                series.background | {e: np.asarray(series.background[e]) / s
                                     for e, s in recovered.items() if e in series.background})
    else:
        log.info("float maps of %s: noise autocorrelation at lags 1-3 %s; correlation "
                 "length %d px%s", "+".join(plan.correlation),
                 "; ".join(f"{e} {np.round(rho[1:4], 2).tolist()}"
                           for e, rho in plan.correlation.items()),
                 plan.correlation_px,
                 "" if opts.correlation_px is None else " (set by correlation_px)")
    log.info("denoising %s with the %r scheme on %s", "+".join(elements), scheme, dev)
    data = _Data.from_series(series, scheme, opts.use_haadf, dev)
    data.radius = plan.correlation_px or 0
    if scheme in ("recorrupted", "blindspot") and plan.correlation:
        # one export filter for every element: the least signal-biased (smallest) width
        data.blur_px = min(correlation_sigma(rho[1]) for rho in plan.correlation.values())
        data.deconvolve = opts.deconvolve
        log.info("%s: noise filtered by a Gaussian of %.2f px (the width the noise "
                 "correlation measures)%s", scheme, data.blur_px,
                 "; the output, blurred by it, is fitted to the maps" if opts.deconvolve
                 else "")
    if scheme == "recorrupted":
        data.noise_std = data.white_noise_std() * np.float32(np.sqrt(RECORRUPTION_SHARE))
    model, sub = _networks(data, opts, scheme, seed, dev)
    groups = elements if sub.n_targets == model.groups else ["+".join(elements)]
    checkpoint = None if checkpoint_dir is None else Path(checkpoint_dir) / (
        f"denoise_{opts.networks}.pt")
    key = fingerprint(sub.values, *(() if sub.haadf is None else (sub.haadf,)),
                      seed=seed, scheme=scheme, n_targets=sub.n_targets, radius=sub.radius,
                      options={k: v for k, v in opts.model_dump().items()
                               if k not in ("inference_splits", "checkpoint_every")})
    trained = train(
        model, lambda m, g: sub.loss(m, g, opts).view(model.groups, -1).mean(dim=1),
        make_generator(seed, dev), steps=opts.steps, lr=opts.lr,
        name=f"denoise ({scheme})", key=key, groups=groups, checkpoint=checkpoint,
        checkpoint_every=opts.checkpoint_every, progress=progress)
    losses = dict(zip(groups, trained, strict=True))
    # Inference draws its own splits from a generator seeded apart from training, so a
    # resumed run (whose training generator was restored) draws the same splits.
    with deterministic():
        result = sub.predict(model, make_generator(seed + 1, dev), opts)
    projections = {}
    for i, element in enumerate(elements):
        net = result[:, i]
        if element in series.background:
            net = net - series.background[element].astype(np.float32)
        if scales.get(element, 1.0) != 1.0:
            net = net * np.float32(scales[element])
        projections[element] = np.ascontiguousarray(net, dtype=np.float32)
    return DenoiseResult(projections, scheme, losses,
                         None if scheme in COUNT_SCHEMES else plan.correlation_px, scales)


def _networks(data: _Data, opts: DenoiseOptions, scheme: str, seed: int,
              dev: torch.device) -> tuple[DenoiserNet, _Data]:
    """The denoiser of every element and the data it trains on.

    ``networks: shared``: one network maps all the elements (and the HAADF) to all the
    elements. ``per_element`` (the paper's): one network per element, all trained at once
    as one grouped module (:class:`~edxtomo.deep.unet.DenoiserNet`); network ``k`` sees
    the training input of element ``k``, the other elements as measured (with
    ``use_other_elements``) and the HAADF, never element ``k`` as measured (it holds the
    training target).
    """
    n = len(data.scale)
    everything = list(range(n))
    if opts.networks == "shared":
        sub = data.for_network(everything, [])
        inputs = [list(range(sub.in_channels))]
    else:
        guides = everything if opts.use_other_elements else []
        sub = data.for_network(everything, guides)
        extra = list(range(n + len(guides), sub.in_channels))
        inputs = [[k] + [n + j for j in guides if j != k] + extra for k in everything]

    def network(group_inputs: list[list[int]]) -> DenoiserNet:
        return DenoiserNet(n // len(inputs) * len(group_inputs), group_inputs, opts.width,
                           opts.depth, scheme in COUNT_SCHEMES)

    first = seeded_module(lambda: network(inputs[:1]), seed, dev)
    if len(inputs) == 1:
        return first, sub
    # Every network starts from the weights that the seed draws for one network alone, the
    # start they had when they trained apart (at the CPU budget Zn's result spans 3-4 dB
    # over starts and draws: bench/denoise_seeds.py). seeded_module: the draw it replaces
    # must not touch the global RNG, which the self-check's training in another thread seeds.
    model = seeded_module(lambda: network(inputs), seed, dev)
    with torch.no_grad():
        for grouped, alone in zip(model.parameters(), first.parameters(), strict=True):
            grouped.copy_(alone.reshape(1, -1).expand(len(inputs), -1).reshape(grouped.shape))
    return model, sub


@dataclass
class _Data:
    """Training data of one network, on the device.

    ``values``: per element, counts ``(n_tilt, n_el, ny, nx)``, frames ``(n_tilt, n_el,
    n_frame, ny, nx)``, or normalised floats; the first ``n_targets`` elements are the ones
    the network predicts, the others guide it. ``scale``: per element, the mean count per
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
                    dev: torch.device) -> _Data:
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

    def for_network(self, targets: list[int], guides: list[int]) -> _Data:
        """The data of a network predicting ``targets`` with ``guides`` as extra inputs."""
        order = targets + guides
        return _Data(self.scheme, self.values[:, order], self.scale[order], self.haadf,
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
