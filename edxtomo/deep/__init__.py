"""Unsupervised deep STEM-EDX tomography (after Han et al., Nat. Mach. Intell. 3, 267, 2021).

The pipeline, trained on the measurement alone:

a. :func:`denoise_projections` -- self-supervised denoising of the raw, unaligned element
   maps (frame or binomial count splitting, Noise2Noise with a Poisson loss; a
   Neighbor2Neighbor scheme for float maps), guided by the HAADF and the other elements;
b. model-based sparse-view reconstruction of the denoised, aligned projections
   (TV-KL on the denoised counts, or least squares + l1/TV as in the paper);
c. view enrichment (:func:`enrich_views`): a net maps reprojections at the measured angles
   onto the measurement and is applied at dense angles;
d. a final reconstruction (TV, SIRT or FBP) from the enriched views.

:func:`run_deep` runs a-d in order on one sample (it applies the alignment between a and
b), then checks itself against ``tv`` on held-out counts (:func:`run_selfcheck`);
:func:`reconstruct_deep` runs b-d. The workflow runs each training of step a as a job
of its own (:func:`denoise_part`, :func:`write_denoised`), and passes them back to
:func:`run_deep` as a :class:`Denoising`. The options classes live in :mod:`edxtomo.options`.
"""

from edxtomo.deep.denoise import (
    DenoiseResult,
    denoise_projections,
    read_denoised,
    write_denoised,
)
from edxtomo.deep.enrich import dense_angles, enrich_views
from edxtomo.deep.pipeline import DeepResult, reconstruct_deep
from edxtomo.deep.run import (
    DeepRun,
    Denoising,
    denoise_part,
    read_denoising,
    run_deep,
    write_deep_run,
)
from edxtomo.deep.schemes import choose_scheme, is_counts
from edxtomo.deep.selfcheck import run_selfcheck
from edxtomo.deep.training import TrainingDivergedError

__all__ = [
    "DeepResult",
    "DeepRun",
    "DenoiseResult",
    "Denoising",
    "TrainingDivergedError",
    "choose_scheme",
    "dense_angles",
    "denoise_part",
    "denoise_projections",
    "enrich_views",
    "is_counts",
    "read_denoised",
    "read_denoising",
    "reconstruct_deep",
    "run_deep",
    "run_selfcheck",
    "write_deep_run",
    "write_denoised",
]
