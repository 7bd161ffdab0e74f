"""Options of the deep pipeline (configuration section ``reconstruct.deep``).

The figures quoted in the docstrings were measured on the demo specimen (64^2 px, 13 tilts)
when the defaults were chosen; see ``bench/README.md``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from edxtomo.options.base import ChannelWeight, Options, OptionsT
from edxtomo.options.reconstruct import AutoWeight, FbpFilter

MBIR_WEIGHT = 0.03
"""Step b weight of channels that a per-channel mapping leaves out without a `default`."""

Budget = Literal["auto", "full", "fast"]

SELFCHECK_PART = "selfcheck"
"""The self-check's part of a deep run: its step a job, and its checkpoints' subfolder."""
DENOISING_PARTS = ("full", SELFCHECK_PART)
"""The trainings of step a: the extracted series, and the self-check's half of it."""

BUDGETS: dict[str, dict[str, dict[str, int]]] = {
    "full": {"denoise": {"steps": 400, "batch_size": 8}, "mbir": {"outer": 20, "inner": 20},
             "enrich": {"steps": 200}, "final": {"iterations": 200}},
    "fast": {"denoise": {"steps": 160, "batch_size": 4}, "mbir": {"outer": 10, "inner": 10},
             "enrich": {"steps": 60}, "final": {"iterations": 60}},
}
"""Training and iteration counts of each budget, by step. ``fast`` runs the demo (64^2 px,
13 tilts, 5 elements) in a few minutes on 2 CPU cores; ``full`` is the GPU setting.

The fast denoiser takes 160 steps of 4 views: on one CPU thread, 120 steps of 4 views of
the demo took 0.45 of the time of 120 steps of 8, and 160 steps of 4 scored higher than 120
of 8 in 0.64 of the time (projection PSNR, mean of 3 specimens x 2 seeds: In +1.3, P +1.3,
Zn +0.3, Se +0.4, S +0.3 dB; ``bench/README.md``), where 80 steps of 8 lost 0.8-1.4 dB."""


def budget_name(budget: str, device_type: str) -> str:
    """The budget that runs: ``auto`` is ``full`` on CUDA and ``fast`` elsewhere."""
    if budget == "auto":
        return "full" if device_type == "cuda" else "fast"
    return budget


def fill_budget(options: OptionsT, step: str, budget: str) -> OptionsT:
    """``options`` of one step with the counts left at ``null`` taken from ``budget``.

    Parameters
    ----------
    options : DenoiseOptions, MbirOptions, EnrichOptions or FinalOptions
    step : {"denoise", "mbir", "enrich", "final"}
    budget : {"full", "fast"}
    """
    missing = {key: value for key, value in BUDGETS[budget][step].items()
               if getattr(options, key) is None}
    return options.model_copy(update=missing)


class NetworkOptions(Options):
    """The U-Net and its training batches, shared by the denoising and enrichment steps."""

    width: int = Field(16, ge=1)
    """U-Net feature maps at full resolution (time grows as its square)"""
    depth: int = Field(2, ge=1)
    """U-Net pooling levels"""
    batch_size: int = Field(8, ge=1)
    """views (tilts) per step"""
    patch_px: int = Field(64, ge=8)
    """side of the random square crop per step (the whole image when it is smaller)"""
    checkpoint_every: int = Field(50, ge=1)
    """steps between checkpoints"""


class DenoiseOptions(NetworkOptions):
    """Step a, self-supervised denoising (:func:`edxtomo.deep.denoise_projections`).

    ``networks: per_element`` (as the paper: the S net also sees Se and Zn) against one
    shared net of 400 steps gave Zn +5.6, S +2.8, Se +0.4 dB in the projections' PSNR at
    300 steps, for n_element times the compute. The element networks train side by side as
    one grouped module, so a step costs one network's kernel launches on a GPU.
    """

    steps: int | None = Field(None, ge=1)
    """optimiser steps per network; `null`: from `budget` (full 400, fast 160)"""
    batch_size: int | None = Field(None, ge=1)
    """views (tilts) per step; `null`: from `budget` (full 8, fast 4)"""
    lr: float = Field(5e-3, gt=0)
    """Adam learning rate (cosine-decayed)"""
    inference_splits: int = Field(8, ge=1)
    """fresh count splits (count schemes) or recorruptions (recorrupted) averaged at inference"""
    scheme: Literal["auto", "frames", "binomial", "neighbor2neighbor", "recorrupted",
                    "blindspot"] = "auto"
    """training pairs: `auto` (frames when kept, binomial splits of counts, also of floats that are
    counts times a scale; for other floats neighbor2neighbor when their noise is white, else
    recorrupted: pairs recorrupted with noise of the measured covariance), or one scheme"""
    networks: Literal["per_element", "shared"] = "per_element"
    """one network per element (trained side by side as one grouped module), or one network
    for all elements"""
    use_other_elements: bool = True
    """per-element nets see the other elements as extra inputs"""
    use_haadf: bool = True
    """the nets see the HAADF (when present) as an extra input"""
    n2n_gamma: float = Field(2.0, ge=0)
    """weight of the Neighbor2Neighbor consistency term"""
    correlation_px: int | None = Field(None, ge=0)
    """noise correlation length (px) of float maps that the blind-spot mask steps over; `null`:
    measured from the maps"""
    deconvolve: bool = True
    """recorrupted and blindspot: fit the output blurred by the filter that the noise correlation
    measures, so the output undoes that filter"""


class MbirOptions(Options):
    """Step b, model-based reconstruction of the denoised, aligned views.

    ``data: kl`` fits the denoised maps better than least squares: they keep count units
    and their error grows with the rate (measured +0.4 dB core, +0.6 and +1.0 dB shells).
    """

    data: Literal["kl", "l2", "fused"] = "kl"
    """data term: `kl` (Poisson, on the denoised net counts clipped at 0), `l2` (least squares, as
    in Han et al.) or `fused` (`kl` plus the HAADF as a Z^gamma sum of the elements, as method
    `fused`; needs a HAADF; step d then uses `kl`)"""
    reg: Literal["tv", "l1"] = "tv"
    """regulariser; `l1` with `data: l2` only"""
    weight: AutoWeight = "auto"
    """regularisation weight: `auto` (per element, chosen by left-out tilts of the denoised views),
    one number, or per element (`kl`: dose independent; `l2`: for unit-peak data)"""
    outer: int | None = Field(None, ge=1)
    """outer iterations (PDHG runs outer x inner; split-Bregman: Bregman updates); `null`:
    from `budget` (full 20, fast 10)"""
    inner: int | None = Field(None, ge=1)
    """inner iterations (split-Bregman: conjugate-gradient steps); `null`: from `budget`
    (full 20, fast 10)"""
    solver: Literal["pdhg", "split_bregman"] = "pdhg"
    """solver; `split_bregman` with `data: l2` only"""
    slab_slices: int | None = Field(None, ge=1)
    """y slices per slab of the PDHG solvers of steps b and d (advanced exactly, with a halo);
    `null`: whole channels when they fit in memory, else the largest slabs that do"""
    memory_gib: float | None = Field(None, gt=0)
    """device memory (GiB) that steps b-d plan their slabs, projections and network tiles for;
    `null`: 80% of what is free"""

    @model_validator(mode="after")
    def _kl_needs_tv_pdhg(self) -> MbirOptions:
        if self.data != "l2" and (self.reg != "tv" or self.solver != "pdhg"):
            raise ValueError(f"data '{self.data}' works with reg 'tv' and solver 'pdhg'")
        return self


class EnrichOptions(NetworkOptions):
    """Step c, view enrichment (:func:`edxtomo.deep.enrich_views`)."""

    steps: int | None = Field(None, ge=1)
    """optimiser steps; `null`: from `budget` (full 200, fast 60)"""
    lr: float = Field(1e-3, gt=0)
    """Adam learning rate (cosine-decayed)"""
    step_deg: float = Field(1.0, gt=0)
    """angular step of the dense (enriched) views"""
    loss: Literal["l1", "l2"] = "l1"
    """training loss"""


class FinalOptions(Options):
    """Step d, the final reconstruction from the enriched views.

    SIRT and FBP give the minimum-norm volume, empty in the missing wedge: on the demo they
    lose 2-5 dB against the model-based volume they start from, while TV keeps it. The TV
    weight is multiplied by ``n_dense / n_measured`` (the data term sums over views): with
    that scaling c+d gained 0.2-0.5 dB over step b on the demo (CPU), without it they lost
    0.4-0.9 dB. At the full budget (GPU, 96^3, ``bench/README.md``) c+d gain 0.3-0.6 dB on
    the core (In, P) at 7 and 13 tilts and lose 0.4-1.0 dB on the shells (Zn, Se, S); at
    5 tilts and half dose they lose 0.4-2.3 dB on every element: ``none`` keeps step b's.
    """

    method: Literal["tv", "sirt", "fbp", "none"] = "tv"
    """`tv`: step b's data term plus TV on the enriched views; `sirt`; `fbp`; or `none`: step b's
    volumes are the result (no enrichment, no step d), better on thin shells and at few tilts"""
    iterations: int | None = Field(None, ge=1)
    """SIRT or PDHG iterations; `null`: from `budget` (full 200, fast 60)"""
    weight: ChannelWeight | None = None
    """TV weight per measured view as in step b (scaled by the number of dense views); `null` takes
    step b's, the one chosen from the data when step b's is `auto`"""
    filter: FbpFilter = "hann"
    """FBP filter window"""


class DeepOptions(Options):
    """The deep pipeline, steps a to d (:func:`edxtomo.deep.run_deep`)."""

    budget: Budget = "auto"
    """training budget: `auto` (`full` on CUDA, `fast` on the CPU), `full` or `fast`; a count
    set in a step below wins over it"""
    denoise: DenoiseOptions = DenoiseOptions()
    """step a: self-supervised denoising of the raw counts"""
    mbir: MbirOptions = MbirOptions()
    """step b: model-based reconstruction"""
    enrich: EnrichOptions = EnrichOptions()
    """step c: view enrichment"""
    final: FinalOptions = FinalOptions()
    """step d: final reconstruction"""
    selfcheck: bool = True
    """rerun steps a-d and `tv` on half of the counts and score both on the other half
    (`selfcheck.tsv`, a warning where `deep` loses); doubles deep's work (a second denoise
    job)"""

    def denoising_settings(self) -> dict[str, Any]:
        """The settings that a training of step a reads (``budget``, ``denoise``), as plain
        data: the params of the workflow's denoise rule, which reruns only when they change."""
        return self.model_dump(mode="json", include={"budget", "denoise"})

    def denoising_parts(self) -> tuple[str, ...]:
        """The trainings of step a, each a job of the workflow: ``"full"`` (the extracted
        series) and, with the self-check on, :data:`SELFCHECK_PART` (its half)."""
        return DENOISING_PARTS if self.selfcheck else DENOISING_PARTS[:1]

    def with_budget(self, device_type: str) -> tuple[DeepOptions, str]:
        """These options with every count left at ``null`` taken from the budget that runs
        on ``device_type`` (``"cuda"`` or ``"cpu"``); and that budget's name."""
        name = budget_name(self.budget, device_type)
        steps = {step: fill_budget(getattr(self, step), step, name) for step in BUDGETS[name]}
        return self.model_copy(update=steps), name
