"""The whole workflow configuration (``config/config.yaml``), assembled from the stages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from edxtomo.options.align import AlignOptions
from edxtomo.options.analyze import AnalyzeOptions, Method
from edxtomo.options.base import Options, parse_options
from edxtomo.options.deep import DeepOptions
from edxtomo.options.extract import ExtractOptions
from edxtomo.options.plan import PlanOptions
from edxtomo.options.reconstruct import (
    Backend,
    FbpOptions,
    FusedOptions,
    SirtOptions,
    TvOptions,
)

Device = Literal["auto", "cpu", "cuda"]

# The settings each reconstruction method reads: a rule's params hold only these, so a
# change to one method's options replans that method's branch alone.
METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "sirt": ("nz", "backend", "chunk_slices", "sirt"),
    "fbp": ("nz", "backend", "chunk_slices", "fbp"),
    "tv": ("nz", "tv"),
    "fused": ("nz", "fused"),
    # tv: the deep job's self-check runs it on held-out counts; fused: mbir.data: fused
    "deep": ("nz", "deep", "tv", "fused"),
}


class ReconstructOptions(Options):
    """Reconstruction methods and their settings (:mod:`edxtomo.tomo`, :mod:`edxtomo.deep`)."""

    methods: list[Method] = ["sirt", "fbp", "tv", "fused", "deep"]
    """reconstructions to run"""
    backend: Backend = "torch"
    """projector of `sirt` and `fbp`: `torch`, `astra` or `tomopy`"""
    nz: int | None = Field(None, ge=1)
    """volume depth in voxels; `null` gives the image width"""
    chunk_slices: int | None = Field(None, ge=1)
    """y slices of `sirt` and `fbp` reconstructed at a time (memory); `null` takes as many as fit"""
    sirt: SirtOptions = SirtOptions()
    """SIRT"""
    fbp: FbpOptions = FbpOptions()
    """filtered back-projection"""
    tv: TvOptions = TvOptions()
    """TV-KL, the strongest classical method"""
    fused: FusedOptions = FusedOptions()
    """fused HAADF + EDX: all elements at once, the HAADF as a Z^gamma-weighted sum"""
    deep: DeepOptions = DeepOptions()
    """the deep pipeline (Han et al. 2021)"""

    def method_settings(self, method: str) -> dict[str, Any]:
        """The settings that ``method`` reads, as plain data (a rule's params).

        Parameters
        ----------
        method : {"sirt", "fbp", "tv", "fused", "deep"}
        """
        return self.model_dump(mode="json", include=set(METHOD_KEYS[method]))


class SimulateOptions(Options):
    """One simulated specimen (:func:`edxtomo.simulate.simulate_acquisition`)."""

    preset: str
    """a specimen preset (`resources/specimens/*.yaml`), simulated into `resources/demo/{name}/`"""
    seed: int | None = Field(None, ge=0)
    """seed of that simulation; `null` takes the top-level `seed`"""


class WorkflowConfig(Options):
    """The workflow configuration: one section per stage."""

    samples: str = "config/samples.tsv"
    """the sample sheet (TSV, one row per tilt series)"""
    seed: int = Field(0, ge=0)
    """seed of every random step (simulation, count splits, network initialisation, batches); the
    same seed on the same device gives the same volumes"""
    device: Device = "auto"
    """where PyTorch runs: `auto` (CUDA when present, else the CPU with a warning), `cpu`, or
    `cuda` (an error when there is no GPU)"""
    simulate: dict[str, SimulateOptions] = {}
    """specimens simulated by the workflow, by name"""
    extract: ExtractOptions = ExtractOptions()
    """spectrum images to element maps"""
    align: AlignOptions = AlignOptions()
    """registration of the tilt series"""
    reconstruct: ReconstructOptions = ReconstructOptions()
    """reconstructions"""
    analyze: AnalyzeOptions = AnalyzeOptions()
    """segmentation and shell thickness"""
    plan: PlanOptions = PlanOptions()
    """acquisition planning, run by `snakemake plan` only: precision against dose and tilts"""

    @model_validator(mode="after")
    def _analyzed_methods_are_reconstructed(self) -> WorkflowConfig:
        missing = sorted(set(self.analyze.methods) - set(self.reconstruct.methods))
        if missing:
            raise ValueError(f"analyze.methods {missing} are not in reconstruct.methods")
        return self

    def simulation_seed(self, specimen: str) -> int:
        """Seed of a simulated specimen: its own, else the top-level seed."""
        own = self.simulate[specimen].seed
        return self.seed if own is None else own


def load_workflow_config(config: Mapping[str, Any]) -> WorkflowConfig:
    """Validate a configuration mapping (Snakemake's ``config``) with every default filled in.

    Raises
    ------
    ConfigError
        Naming each invalid key.
    """
    return parse_options(WorkflowConfig, config)
