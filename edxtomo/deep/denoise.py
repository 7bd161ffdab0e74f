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
    covariance, times :data:`~edxtomo.deep.denoise_data.RECORRUPTION_SHARE`, is drawn afresh
    each step and the network maps ``y + alpha z`` onto ``y - z / alpha``
    (:func:`edxtomo.deep.pairs.recorrupt`).
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
import pandas as pd
import torch

from edxtomo.deep.denoise_data import RECORRUPTION_SHARE, DenoiseData
from edxtomo.deep.noise import correlation_sigma, recover_counts
from edxtomo.deep.schemes import COUNT_SCHEMES, plan_denoising
from edxtomo.deep.training import (
    deterministic,
    fingerprint,
    make_generator,
    seeded_module,
    train,
    write_losses,
)
from edxtomo.deep.unet import DenoiserNet
from edxtomo.errors import EdxtomoInputError
from edxtomo.io import TiltSeries, read_stack, write_stack
from edxtomo.options import DenoiseOptions, parse_options
from edxtomo.options.deep import budget_name, fill_budget
from edxtomo.tomo.device import resolve_device

log = logging.getLogger(__name__)

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
    angles_deg : ndarray, shape (n_tilt,)
        Tilt angles of the projections in degrees (those of the denoised series).
    pixel_size_nm : float
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
    angles_deg: np.ndarray
    pixel_size_nm: float
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
    data = DenoiseData.from_series(series, scheme, opts.use_haadf, dev)
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
    return DenoiseResult(projections, scheme, np.asarray(series.angles_deg, float),
                         series.pixel_size_nm, losses,
                         None if scheme in COUNT_SCHEMES else plan.correlation_px, scales)


def _networks(data: DenoiseData, opts: DenoiseOptions, scheme: str, seed: int,
              dev: torch.device) -> tuple[DenoiserNet, DenoiseData]:
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


def write_denoised(result: DenoiseResult, directory: str | Path) -> None:
    """Write a :class:`DenoiseResult` as ``directory/{element}.hspy`` (raw frame; scheme,
    scales and the order of the elements in the metadata) and ``directory/losses.tsv``
    (the loss of each network per step)."""
    out = Path(directory)
    provenance = {"frame": "raw (unaligned)", "scheme": result.scheme,
                  "elements": list(result.projections)} | {
        key: value for key, value in (("noise_correlation_px", result.noise_correlation_px),)
        if value is not None}
    for name, stack in result.projections.items():
        scale = result.count_scale.get(name)
        write_stack(out / f"{name}.hspy", stack, result.angles_deg, result.pixel_size_nm, name,
                    provenance | ({} if scale is None else {"count_scale": scale}))
    write_losses(result.losses, out / "losses.tsv")


def read_denoised(directory: str | Path) -> DenoiseResult:
    """Read a :class:`DenoiseResult` written by :func:`write_denoised`, its elements in
    their order (which the later networks' channels follow)."""
    directory = Path(directory)
    paths = sorted(directory.glob("*.hspy"))
    if not paths:
        raise EdxtomoInputError(f"{directory}: no denoised projections (*.hspy) in it")
    stacks = {path.stem: read_stack(path) for path in paths}
    _, angles_deg, pixel_size_nm, provenance = stacks[paths[0].stem]
    elements = [str(e) for e in provenance["elements"]]
    if sorted(elements) != sorted(stacks):
        raise EdxtomoInputError(f"{directory}: holds {sorted(stacks)}, written as {elements}")
    losses = pd.read_csv(directory / "losses.tsv", sep="\t", index_col="step")
    correlation_px = provenance.get("noise_correlation_px")
    return DenoiseResult(
        {e: np.asarray(stacks[e][0], np.float32) for e in elements}, str(provenance["scheme"]),
        angles_deg, pixel_size_nm,
        {name: column.dropna().tolist() for name, column in losses.items()},
        None if correlation_px is None else int(correlation_px),
        {e: float(stacks[e][3]["count_scale"]) for e in elements
         if "count_scale" in stacks[e][3]})
