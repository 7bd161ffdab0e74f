"""Configuration and sample-sheet validation for the workflow.

The workflow validates the configuration (:func:`edxtomo.options.load_workflow_config`) and
calls :func:`load_samples` before it builds the DAG, so a bad key, a wrong type, a sample row
pointing at no file or a duplicate sample name stops the run before any job, with a message
that names the key or the row.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from edxtomo.errors import ConfigError
from edxtomo.options import WorkflowConfig

log = logging.getLogger(__name__)

ELEMENT_PLACEHOLDER = "{element}"
SIMULATED_ROOT = "resources/demo"
"""Folder of the specimens that the ``simulate`` rule writes, one sub-folder each."""
SAMPLE_COLUMNS = ("sample", "raw", "maps", "angles", "elements", "angles_deg", "pixel_size_nm")


@dataclass(frozen=True)
class Sample:
    """One validated row of the sample sheet.

    Attributes
    ----------
    name : str
        Sample name (a folder name under ``results/``).
    raw : str or None
        Glob of raw spectrum-image files, one per tilt.
    simulated : str or None
        Name of the ``simulate:`` specimen that produces the raw files, when they do not
        exist yet.
    maps : str or None
        Path pattern with an ``{element}`` placeholder.
    angles : str or None
        ``.rawtlt`` file of the maps route.
    elements : tuple of str
        Element symbols from the sheet (empty: from the files or the config).
    angles_deg : tuple of float
        Tilt angles in degrees from the sheet (empty: from the files).
    pixel_size_nm : float or None
        Pixel size override in nm.
    """

    name: str
    raw: str | None
    simulated: str | None
    maps: str | None
    angles: str | None
    elements: tuple[str, ...]
    angles_deg: tuple[float, ...]
    pixel_size_nm: float | None

    def selected_elements(self, configured: Iterable[str]) -> list[str] | None:
        """The sheet's elements, else the configured ones (``extract.elements``); None when
        both are empty: the files' own element selection (or every map) then decides."""
        return list(self.elements or configured) or None


# What each column must hold, said in words instead of the schema's regular expression.
COLUMN_FORMS = {
    "sample": "letters, digits, '_', '.' or '-', starting with a letter or digit (it names a "
              "folder)",
    "elements": "comma-separated element symbols such as 'In, Se, Zn'",
    "angles_deg": "comma-separated tilt angles in degrees such as '-60, -50, ..., 60'",
    "pixel_size_nm": "a positive number, the pixel size in nm",
}


def _validation_message(exc: Exception) -> str:
    """Shorten Snakemake's validation error to 'key a.b.c: reason'."""
    text = str(exc)
    reason = re.search(r"ValidationError: (.*)", text)
    where = re.search(r"On instance((?:\[[^\]]*\])*)", text)
    reason_text = reason.group(1).strip() if reason else text.splitlines()[0]
    if where and where.group(1):
        keys = re.findall(r"\[([^\]]*)\]", where.group(1))
        key_path = ".".join(k.strip("'\"") for k in keys)
        value = re.match(r"(.*) does not match ", reason_text)
        if value and key_path in COLUMN_FORMS:
            reason_text = f"{value.group(1)} is not {COLUMN_FORMS[key_path]}"
        return f"key '{key_path}': {reason_text}"
    return reason_text


def _unknown_columns_message(path: Path, unknown: list[str]) -> str:
    message = f"sample sheet {path}: unknown column(s) {unknown}"
    if any(" " in name and "sample" in name for name in unknown):
        message += ("; the sheet must be tab-separated, and this header looks separated by "
                    "spaces")
    return message + f"; the columns are {list(SAMPLE_COLUMNS)}"


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _simulated_specimen(pattern: str, simulate: Iterable[str]) -> str | None:
    """Name of the simulated specimen whose output folder ``pattern`` points into.

    Decided from the names alone, never from what exists on disk, so that the plan is the
    same before and after the simulation ran.
    """
    folder = Path(pattern).parent
    for name in simulate:
        if folder == Path(SIMULATED_ROOT, name):
            return name
    return None


def _resolve_row(row: dict[str, str], where: str, config: WorkflowConfig) -> Sample:
    raw, maps, angles = row.get("raw", ""), row.get("maps", ""), row.get("angles", "")
    elements = tuple(_split_list(row.get("elements", "")))
    simulated = _simulated_specimen(raw, config.simulate) if raw else None
    if raw and (maps or angles):
        raise ConfigError(f"{where}: give either 'raw' or 'maps' + 'angles', not both")
    if raw:
        if simulated is None and not glob.glob(raw):
            raise ConfigError(f"{where}: 'raw' pattern {raw!r} matches no file")
    elif maps or angles:
        if not (maps and angles):
            raise ConfigError(f"{where}: the maps route needs both 'maps' and 'angles'")
        if ELEMENT_PLACEHOLDER not in maps:
            raise ConfigError(f"{where}: 'maps' {maps!r} has no {ELEMENT_PLACEHOLDER} placeholder")
        if not Path(angles).is_file():
            raise ConfigError(f"{where}: angles file {angles!r} does not exist")
        for element in elements or config.extract.elements:
            path = maps.replace(ELEMENT_PLACEHOLDER, element)
            if not Path(path).is_file():
                raise ConfigError(f"{where}: map of {element} {path!r} does not exist")
    else:
        raise ConfigError(f"{where}: no data; give 'raw', or 'maps' and 'angles'")
    pixel = row.get("pixel_size_nm", "")
    pixel_size_nm = float(pixel) if pixel else None
    if pixel_size_nm is not None and pixel_size_nm <= 0:
        raise ConfigError(f"{where}: pixel_size_nm must be positive, got {pixel}")
    return Sample(
        name=row["sample"],
        raw=raw or None,
        simulated=simulated,
        maps=maps or None,
        angles=angles or None,
        elements=elements,
        angles_deg=tuple(float(a) for a in _split_list(row.get("angles_deg", ""))),
        pixel_size_nm=pixel_size_nm,
    )


def load_samples(
    path: str | os.PathLike, schema_path: str | os.PathLike, config: WorkflowConfig
) -> dict[str, Sample]:
    """Read, validate and resolve the sample sheet.

    Parameters
    ----------
    path : path-like
        Tab-separated sample sheet with the columns of :data:`SAMPLE_COLUMNS`.
    schema_path : path-like
        JSON schema (YAML) of one row.
    config : WorkflowConfig
        The validated configuration (for ``simulate`` and ``extract.elements``).

    Returns
    -------
    dict of str to Sample
        By sample name, in sheet order.
    """
    from snakemake.utils import validate

    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(f"sample sheet {path}: cannot be read ({exc})") from None
    unknown = [c for c in table.columns if c not in SAMPLE_COLUMNS]
    if unknown:
        raise ConfigError(_unknown_columns_message(path, unknown))
    if "sample" not in table.columns or table.empty:
        raise ConfigError(f"sample sheet {path}: needs a 'sample' column and at least one row")
    samples: dict[str, Sample] = {}
    for index, record in enumerate(table.to_dict("records"), start=2):
        row = {k: v.strip() for k, v in record.items() if v.strip()}
        where = f"sample sheet {path}, line {index} (sample {row.get('sample', '?')!r})"
        try:
            validate(row, str(schema_path))
        except Exception as exc:
            raise ConfigError(f"{where}: {_validation_message(exc)}") from None
        if row["sample"] in samples:
            raise ConfigError(f"{where}: duplicate sample name {row['sample']!r}")
        samples[row["sample"]] = _resolve_row(row, where, config)
    return samples


def raw_inputs(sample: Sample) -> dict[str, Any]:
    """A sample's input files, the same before and after any job ran.

    Returns
    -------
    dict
        ``{"raw": folder}`` for a simulated sample (the ``simulate`` rule's output),
        ``{"raw": [files]}`` for raw files, ``{"angles": rawtlt}`` for the maps route.
    """
    if sample.simulated:
        return {"raw": str(Path(SIMULATED_ROOT, sample.simulated))}
    if sample.raw:
        return {"raw": sorted(glob.glob(sample.raw))}
    return {"angles": sample.angles}
