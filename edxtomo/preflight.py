"""Checks of every sample before any job runs: a bad file stops the plan, not a job.

:func:`preflight` reads what a sample's jobs will read, as far as headers allow, and
collects every problem it finds, one line each naming the sample and the file:

- raw spectrum images: the format by content, shapes, pixel sizes, energy axes, beam
  energy and detector across tilts, the stage tilts (present, not duplicated, and in
  agreement with the sheet's ``angles_deg``) (:mod:`edxtomo.extract.tilts`);
- ready maps: the stacks, their shapes, the ``.rawtlt`` length, NaN and Inf values, and
  a HAADF stack where a configured method needs one (``fused``, or deep's
  ``mbir.data: fused``);
- the analysis centre element against each sample's elements;
- the device: ``cuda`` on a machine without an NVIDIA GPU.

Simulated samples are checked by their own job (their files do not exist when planning).
"""

from __future__ import annotations

import glob
from collections.abc import Mapping

from edxtomo.config import Sample
from edxtomo.errors import ConfigError, EdxtomoInputError
from edxtomo.options import WorkflowConfig
from edxtomo.runtime import nvidia_gpu_present


def preflight(samples: Mapping[str, Sample], config: WorkflowConfig, *,
              local: bool = True) -> None:
    """Check every sample's files and the device; raise with every problem found.

    Parameters
    ----------
    samples : mapping of str to Sample
        The sample sheet (:func:`edxtomo.config.load_samples`).
    config : WorkflowConfig
    local : bool
        Jobs run on this machine (the device is checked here); False for a cluster.

    Raises
    ------
    ConfigError
        One line per problem.
    """
    problems = [device_problem(config.device)] if local else []
    for sample in samples.values():
        problems += sample_problems(sample, config)
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError("the input cannot be processed:\n  " + "\n  ".join(problems))


def device_problem(device: str) -> str | None:
    """The problem with ``device`` on this machine, if any (decided without torch)."""
    if device == "cuda" and not nvidia_gpu_present():
        return ("device: 'cuda' is configured but this machine has no NVIDIA GPU with a "
                "driver loaded; set device to 'auto' (CUDA when present) or 'cpu'")
    return None


def sample_problems(sample: Sample, config: WorkflowConfig) -> list[str]:
    """Every problem of one sample, each line starting with ``sample NAME:``."""
    if sample.simulated:
        return []
    try:
        if sample.maps:
            elements, has_haadf = _maps_channels(sample, config)
        else:
            # a raw file's HAADF is read with its spectrum image: its job checks it
            elements, has_haadf = _raw_elements(sample, config), True
    except EdxtomoInputError as exc:
        return [f"sample {sample.name!r}: {exc}"]
    problems = _centre_problems(elements, config) + _haadf_problems(has_haadf, config)
    return [f"sample {sample.name!r}: {p}" for p in problems]


def _haadf_problems(has_haadf: bool, config: WorkflowConfig) -> list[str]:
    """The configured methods that need a HAADF, where the sample has none."""
    recon = config.reconstruct
    needs = [what for what, wanted in (
        ("method fused (reconstruct.methods)", "fused" in recon.methods),
        ("reconstruct.deep.mbir.data: fused",
         "deep" in recon.methods and recon.deep.mbir.data == "fused")) if wanted]
    if has_haadf or not needs:
        return []
    verb = "needs" if len(needs) == 1 else "need"
    return [f"{' and '.join(needs)} {verb} a HAADF stack, and its maps have none (no HAADF "
            "file matches the pattern with {element} = HAADF): give one, or leave fused out"]


def _centre_problems(elements: list[str], config: WorkflowConfig) -> list[str]:
    center = config.analyze.center
    if center == "particle" or not elements or center in elements:
        return []
    return [f"analyze.center {center!r} is not one of its elements {elements}; use "
            "'particle' or one of them"]


def _raw_elements(sample: Sample, config: WorkflowConfig) -> list[str]:
    """Check the headers of a sample's raw files; return its elements."""
    from edxtomo.extract.series import series_elements
    from edxtomo.extract.tilts import check_acquisitions, natural_key, order_tilts
    from edxtomo.io import read_header

    paths = sorted(glob.glob(sample.raw), key=natural_key)
    headers = [read_header(path) for path in paths]
    check_acquisitions(headers, keep_frames=config.extract.keep_frames,
                       pixel_size_given=sample.pixel_size_nm is not None)
    order_tilts(paths, headers, list(sample.angles_deg) or None)
    return series_elements(sample.selected_elements(config.extract.elements), headers)


def _maps_channels(sample: Sample, config: WorkflowConfig) -> tuple[list[str], bool]:
    """Check a sample's maps; return its elements and whether it has a HAADF stack."""
    from edxtomo.io import HAADF, load_maps_series

    series = load_maps_series(sample.maps, sample.angles,
                              sample.selected_elements(config.extract.elements),
                              pixel_size_nm=sample.pixel_size_nm,
                              angles_deg=list(sample.angles_deg) or None)
    return [name for name in series.channels if name != HAADF], HAADF in series.channels
