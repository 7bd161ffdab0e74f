"""One row of the sample sheet to an extracted tilt series: the extract stage's entry point.

A sample is raw spectrum images (:func:`~edxtomo.extract.series.extract_tilt_series`) or
ready element maps (:func:`edxtomo.io.load_maps_series`); the sheet's own elements, angles
and pixel size override the files and the configuration.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from edxtomo.config import Sample
from edxtomo.extract.series import SummedSpectrum, extract_tilt_series
from edxtomo.extract.tilts import natural_key
from edxtomo.io import TiltSeries, atomic_path, load_maps_series, save_tilt_series
from edxtomo.options import ExtractOptions


def raw_files(sample: Sample, inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The raw files of a sample from its job's inputs.

    Parameters
    ----------
    sample : Sample
    inputs : path-like or sequence of path-like
        The files themselves, or, for a simulated sample, the folder that the ``simulate``
        job wrote: its files that match the sample's ``raw`` pattern are taken, in natural
        order (``t2`` before ``t10``, :func:`~edxtomo.extract.tilts.natural_key`).
    """
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    files: list[Path] = []
    for path in map(Path, inputs):
        files += (sorted(path.glob(Path(sample.raw).name), key=natural_key) if path.is_dir()
                  else [path])
    return files


def extract_sample(
    sample: Sample, inputs: Sequence[str | os.PathLike], options: ExtractOptions
) -> tuple[TiltSeries, SummedSpectrum | None]:
    """Extract one sample of the sheet.

    Parameters
    ----------
    sample : Sample
        A row of the sample sheet.
    inputs : sequence of path-like
        The extract job's raw inputs (see :func:`raw_files`); unused for the maps route.
    options : ExtractOptions

    Returns
    -------
    series : TiltSeries
    spectrum : SummedSpectrum or None
        The summed spectrum and windows; None for the maps route.
    """
    angles_deg = list(sample.angles_deg) or None
    elements = sample.selected_elements(options.elements)
    if sample.maps:
        series = load_maps_series(sample.maps, sample.angles, elements,
                                  pixel_size_nm=sample.pixel_size_nm, angles_deg=angles_deg)
        return series, None
    return extract_tilt_series(raw_files(sample, inputs), options, elements=elements,
                               angles_deg=angles_deg, pixel_size_nm=sample.pixel_size_nm)


def write_extracted(series: TiltSeries, spectrum: SummedSpectrum | None,
                    directory: str | os.PathLike) -> None:
    """Write the extracted stacks, and the summed spectrum and its windows as TSV tables."""
    out = Path(directory)
    save_tilt_series(series, out)
    if spectrum is not None:
        for table, name in ((spectrum.to_dataframe(), "spectrum.tsv"),
                            (spectrum.windows_dataframe(), "windows.tsv")):
            with atomic_path(out / name) as tmp:
                table.to_csv(tmp, sep="\t", index=False)
