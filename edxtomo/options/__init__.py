"""Typed options of every stage: the one home of each option's type, default and meaning.

============================  ==========================================================
module                        options
============================  ==========================================================
:mod:`.extract`               :class:`ExtractOptions` (``extract``)
:mod:`.align`                 :class:`AlignOptions` (``align``)
:mod:`.reconstruct`           :class:`SirtOptions`, :class:`FbpOptions`, :class:`TvOptions`,
                              :class:`FusedOptions`
:mod:`.deep`                  :class:`DeepOptions` and its steps (``reconstruct.deep``)
:mod:`.analyze`               :class:`AnalyzeOptions` (``analyze``)
:mod:`.plan`                  :class:`PlanOptions`, :class:`TiltScheme` (``plan``)
:mod:`.workflow`              :class:`WorkflowConfig`, the whole ``config.yaml``
:mod:`.docs`                  the JSON schema and the Markdown tables made from the classes
============================  ==========================================================

Library entry points take these objects; a rule's script builds one with
``SomeOptions.model_validate(snakemake.params.options)``. The package imports pydantic only.
"""

from edxtomo.options.align import AlignOptions
from edxtomo.options.analyze import AnalyzeOptions
from edxtomo.options.base import Options, channel_weights, parse_options
from edxtomo.options.deep import (
    DeepOptions,
    DenoiseOptions,
    EnrichOptions,
    FinalOptions,
    MbirOptions,
)
from edxtomo.options.extract import ExtractOptions
from edxtomo.options.plan import PlanOptions, TiltScheme
from edxtomo.options.reconstruct import FbpOptions, FusedOptions, SirtOptions, TvOptions
from edxtomo.options.workflow import (
    METHOD_KEYS,
    ReconstructOptions,
    SimulateOptions,
    WorkflowConfig,
    load_workflow_config,
)

__all__ = [
    "METHOD_KEYS",
    "AlignOptions",
    "AnalyzeOptions",
    "DeepOptions",
    "DenoiseOptions",
    "EnrichOptions",
    "ExtractOptions",
    "FbpOptions",
    "FinalOptions",
    "FusedOptions",
    "MbirOptions",
    "Options",
    "PlanOptions",
    "ReconstructOptions",
    "SimulateOptions",
    "SirtOptions",
    "TiltScheme",
    "TvOptions",
    "WorkflowConfig",
    "channel_weights",
    "load_workflow_config",
    "parse_options",
]
