"""Headers of raw spectrum images: the calibration of one tilt, read without its counts.

:func:`read_header` gives the :class:`Acquisition` of a raw file (shape, pixel size, energy
axis, beam energy, detectors, frames, stage tilt) from its metadata alone, so a workflow can
check a whole series when it plans, and the extract stage uses the very same record.

Velox ``.emd``
    Read with h5py from the JSON metadata of the first spectrum stream, as rosettasciio's
    Velox reader maps it (same rounding of the tilt, same energy calibration, same scan
    size), but without decoding the streams: a few ms per file.
Other formats (Bruker ``.bcf``, ``.hspy``, ...)
    rosettasciio's reader, lazily, and its metadata dictionaries *before* HyperSpy builds a
    signal: exspy's EDS classes fill a missing stage tilt with 0 deg (and other defaults),
    which would read "not recorded" as "recorded at 0 deg".

A value the file does not record stays ``None`` (tilt, pixel size); the one default is the
detector resolution, see :data:`DEFAULT_RESOLUTION_MNKA_EV`.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError
from edxtomo.io.raw import (
    _NO_SPECTRUM_IMAGE,
    _SPECTRUM_IMAGE_OPTIONS,
    _extension,
    _is_eds_spectrum_image,
    _square_pixel_nm,
    check_raw_file,
)

#: Detector FWHM at Mn Ka (eV) when a file records none (Velox files never do): exspy's
#: default (``preferences.EDS.eds_mn_ka``), typical of silicon drift detectors.
DEFAULT_RESOLUTION_MNKA_EV = 130.0

#: nm per unit of the length units that vendor files write for their pixel size.
_NM_PER_UNIT = {"m": 1e9, "mm": 1e6, "µm": 1e3, "um": 1e3, "nm": 1.0, "pm": 1e-3, "Å": 0.1}


@dataclass(frozen=True)
class Acquisition:
    """Calibration of one raw spectrum image, read from its metadata.

    Attributes
    ----------
    path : Path
        The raw file.
    angle_deg : float or None
        Stage tilt alpha in degrees, None when the file does not record it.
    pixel_size_nm : float or None
        Pixel size in nm, None when the axes carry no length unit.
    image_shape : tuple of int
        ``(ny, nx)``.
    n_frame : int or None
        Frames recorded in the file: a Velox file's frame count (1 included); for other
        formats the size of a third navigation axis, None without one.
    energy_offset_keV, energy_scale_keV : float
        Energy of channel 0 and channel width, in keV.
    n_channel : int
        Number of energy channels.
    beam_energy_keV : float
        Accelerating voltage in kV.
    resolution_mnka_eV : float
        Detector energy resolution (FWHM at Mn Ka) in eV;
        :data:`DEFAULT_RESOLUTION_MNKA_EV` when the file records none.
    elements : tuple of str
        Element selection stored in the file (may be empty).
    detectors : tuple of str
        EDS detectors whose counts the file holds, sorted (Velox: the Super-X segments,
        ``SuperXG21`` ...; Bruker: the detector type); empty when not recorded.
    """

    path: Path
    angle_deg: float | None
    pixel_size_nm: float | None
    image_shape: tuple[int, int]
    n_frame: int | None
    energy_offset_keV: float
    energy_scale_keV: float
    n_channel: int
    beam_energy_keV: float
    resolution_mnka_eV: float
    elements: tuple[str, ...]
    detectors: tuple[str, ...] = ()

    @property
    def energy_keV(self) -> np.ndarray:
        """Energy of each channel in keV, shape ``(n_channel,)``."""
        return self.energy_offset_keV + self.energy_scale_keV * np.arange(self.n_channel)

    def dense_bytes(self, keep_frames: bool) -> int:
        """Bytes of the file's spectrum images read dense: every detector, 8 bytes a channel
        (an upper bound; Velox streams read as 2)."""
        frames = (self.n_frame or 1) if keep_frames else 1
        n_detector = max(len(self.detectors), 1)
        return 8 * frames * n_detector * int(np.prod(self.image_shape)) * self.n_channel


def read_header(path: str | os.PathLike) -> Acquisition:
    """Read the calibration of a raw spectrum-image file without reading its counts.

    Parameters
    ----------
    path : path-like
        Velox ``.emd``, Bruker ``.bcf`` or another EDS spectrum image that rosettasciio
        reads.

    Returns
    -------
    Acquisition
        ``angle_deg`` is None when the file records no stage tilt (never 0 in its place).

    Raises
    ------
    EdxtomoInputError
        A missing file, a format no reader handles, content that is not what the extension
        says, a corrupt file, no EDS spectrum image in it, or no beam energy or energy
        calibration in its metadata.
    """
    path = check_raw_file(path)
    if _extension(path) == "emd":
        acquisition = _velox_header(path)
        if acquisition is not None:
            return acquisition
    return _rsciio_header(path)


def _length_nm(value: Any, units: str | None) -> float | None:
    """A length in nm, None for a unit that is not a length.

    Rounded to 12 significant digits, as :func:`~edxtomo.io.raw.pixel_size_nm_of` does.
    """
    factor = _NM_PER_UNIT.get(str(units).strip())
    if factor is None:
        return None
    return float(f"{abs(float(value)) * factor:.12g}")


def _unreadable(path: Path, exc: Exception) -> EdxtomoInputError:
    return EdxtomoInputError(
        f"{path}: cannot be read, corrupt or truncated? ({type(exc).__name__}: {exc})"
    )


# ---------------------------------------------------------------------------------------------
# Velox
# ---------------------------------------------------------------------------------------------


def _json(dataset: Any) -> Any:
    """A Velox JSON document: a string dataset, or column 0 of a uint8 ``Metadata`` array."""
    raw = dataset[0] if dataset.ndim == 1 else dataset[:, 0].tobytes()
    return json.loads(bytes(raw).decode("utf-8").rstrip("\x00"))


def _velox_header(path: Path) -> Acquisition | None:
    """The Acquisition of a Velox file; None for an HDF5 file that Velox did not write."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "Version" not in f or _json(f["Version"]).get("format") != "Velox":
                return None
            return _velox_acquisition(path, f)
    except EdxtomoInputError:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise _unreadable(path, exc) from exc


def _velox_acquisition(path: Path, f: Any) -> Acquisition:
    data = f["Data"]
    streams = data.get("SpectrumStream")
    if "Image" not in data or "SpectrumImage" not in data or not streams or not len(streams):
        raise EdxtomoInputError(_NO_SPECTRUM_IMAGE.format(path=path))
    keys = list(streams)
    meta = _json(streams[keys[0]]["Metadata"])
    result = meta["BinaryResult"]
    offset_keV, scale_keV = _velox_energy_axis(meta, path)
    pixel, unit = result["PixelSize"], result.get("PixelUnitX")
    # rosettasciio takes the scan size from the first image of the file.
    image = data["Image"][next(iter(data["Image"]))]["Data"]
    settings = _json(data["SpectrumImage"][next(iter(data["SpectrumImage"]))]
                     ["SpectrumImageSettings"])
    return Acquisition(
        path=path,
        angle_deg=_velox_tilt_deg(meta),
        pixel_size_nm=_square_pixel_nm(
            [_length_nm(pixel["width"], unit), _length_nm(pixel["height"], unit)], path),
        image_shape=(int(image.shape[0]), int(image.shape[1])),
        n_frame=int(settings["endFramePosition"]),
        energy_offset_keV=offset_keV,
        energy_scale_keV=scale_keV,
        n_channel=int(_json(streams[keys[0]]["AcquisitionSettings"])["bincount"]),
        beam_energy_keV=_velox_beam_energy_keV(meta, path),
        resolution_mnka_eV=DEFAULT_RESOLUTION_MNKA_EV,
        elements=_velox_elements(f),
        detectors=tuple(sorted(str(_json(streams[k]["Metadata"])["BinaryResult"]["Detector"])
                               for k in keys)),
    )


def _velox_tilt_deg(meta: Mapping[str, Any]) -> float | None:
    """``Stage.AlphaTilt`` (radians, as a string) in degrees, rounded to 0.001 deg as
    rosettasciio does; None when the file records no tilt."""
    radians = _optional_float((meta.get("Stage") or {}).get("AlphaTilt"))
    return None if radians is None else round(float(np.degrees(radians)), 3)


def _velox_beam_energy_keV(meta: Mapping[str, Any], path: Path) -> float:
    value = (meta.get("Optics") or {}).get("AccelerationVoltage")
    if value is None or str(value).strip() == "":
        raise EdxtomoInputError(f"{path}: no beam energy in the metadata "
                                "(Optics.AccelerationVoltage)")
    return float(value) / 1e3


def _velox_energy_axis(meta: Mapping[str, Any], path: Path) -> tuple[float, float]:
    """``(offset, scale)`` in keV from the detector of the stream, matched as rosettasciio
    matches it (its name contains ``BinaryResult.Detector``)."""
    name = meta["BinaryResult"]["Detector"]
    for detector in meta.get("Detectors", {}).values():
        if name in detector.get("DetectorName", "") and "Dispersion" in detector:
            return float(detector["OffsetEnergy"]) / 1e3, float(detector["Dispersion"]) / 1e3
    raise EdxtomoInputError(f"{path}: no energy calibration (Dispersion, OffsetEnergy) for "
                            f"the EDS detector {name} in the metadata")


def _velox_elements(f: Any) -> tuple[str, ...]:
    """The element selection of Velox's quantification settings (version 11 and older)."""
    from rsciio.utils._elements import atomic_number2name

    group = f.get("SharedProperties/EDSSpectrumQuantificationSettings")
    if group is None:
        group = f.get("Operations/ImageQuantificationOperation")
    if group is None or not len(group):
        return ()
    settings = _json(group[next(iter(group))])
    return tuple(atomic_number2name[int(z)] for z in settings.get("elementSelection", []))


# ---------------------------------------------------------------------------------------------
# Other formats: rosettasciio's metadata dictionaries
# ---------------------------------------------------------------------------------------------


def _rsciio_items(path: Path) -> list[dict[str, Any]]:
    """rosettasciio's lazy reader of ``path``: one dictionary per signal in the file."""
    from rsciio import IO_PLUGINS

    ext = _extension(path)
    plugin = next(p for p in IO_PLUGINS if ext in {e.lower() for e in p["file_extensions"]})
    options = _SPECTRUM_IMAGE_OPTIONS.get(ext, {})
    try:
        reader = importlib.import_module(plugin["api"]).file_reader
        return list(reader(str(path), lazy=True, **options))
    except Exception as exc:  # readers raise many types for corrupt or truncated files
        raise _unreadable(path, exc) from exc


def _mapped_metadata(item: Mapping[str, Any]) -> Any:
    """The item's metadata with its reader's ``mapping`` from the original metadata applied,
    as HyperSpy applies it, but without the defaults of any signal class."""
    from hyperspy.misc.utils import DictionaryTreeBrowser

    metadata = DictionaryTreeBrowser(dict(item.get("metadata") or {}))
    original = DictionaryTreeBrowser(dict(item.get("original_metadata") or {}))
    for source, (target, convert) in (item.get("mapping") or {}).items():
        if original.has_item(source):
            value = original.get_item(source)
            value = convert(value) if convert is not None else value
            if value is not None:
                metadata.set_item(target, value)
    return metadata


def _eds_item(path: Path) -> dict[str, Any]:
    """rosettasciio's dictionary of the one EDS spectrum image in the file."""
    found = [item for item in _rsciio_items(path) if _is_eds_spectrum_image(
        str((item.get("metadata") or {}).get("Signal", {}).get("signal_type", "")),
        sum(not axis.get("navigate", True) for axis in item["axes"]),
        sum(bool(axis.get("navigate", True)) for axis in item["axes"]))]
    if not found:
        raise EdxtomoInputError(_NO_SPECTRUM_IMAGE.format(path=path))
    if len(found) > 1:
        raise EdxtomoInputError(
            f"{path}: holds {len(found)} EDS spectrum images; expected one per acquisition"
        )
    return found[0]


def _rsciio_header(path: Path) -> Acquisition:
    item = _eds_item(path)
    axes = sorted(item["axes"], key=lambda a: a.get("index_in_array", 0))
    navigation = [a for a in axes if a.get("navigate", True)]
    metadata = _mapped_metadata(item)
    microscope = ("Acquisition_instrument.TEM" if metadata.has_item("Acquisition_instrument.TEM")
                  else "Acquisition_instrument.SEM")
    offset_keV, scale_keV = _energy_axis_keV(next(a for a in axes if not a.get("navigate")),
                                             path)
    return Acquisition(
        path=path,
        angle_deg=_optional_float(metadata.get_item(f"{microscope}.Stage.tilt_alpha")),
        pixel_size_nm=_square_pixel_nm(
            [_length_nm(a["scale"], a.get("units")) for a in navigation[-2:]], path),
        image_shape=(int(navigation[-2]["size"]), int(navigation[-1]["size"])),
        n_frame=int(navigation[0]["size"]) if len(navigation) == 3 else None,
        energy_offset_keV=offset_keV,
        energy_scale_keV=scale_keV,
        n_channel=int(item["data"].shape[-1]),
        beam_energy_keV=_required_float(metadata.get_item(f"{microscope}.beam_energy"),
                                        f"{path}: no beam energy in the metadata"),
        resolution_mnka_eV=float(metadata.get_item(
            f"{microscope}.Detector.EDS.energy_resolution_MnKa", DEFAULT_RESOLUTION_MNKA_EV)),
        elements=tuple(str(e) for e in metadata.get_item("Sample.elements", [])),
        detectors=_detector_names(metadata.get_item(f"{microscope}.Detector.EDS.detector_type")),
    )


def _energy_axis_keV(axis: Mapping[str, Any], path: Path) -> tuple[float, float]:
    factor = {"keV": 1.0, "eV": 1e-3}.get(str(axis.get("units")))
    if factor is None or "scale" not in axis:
        raise EdxtomoInputError(
            f"{path}: energy axis in {axis.get('units')!r}; expected a uniform axis in keV or eV"
        )
    return float(axis.get("offset", 0.0)) * factor, float(axis["scale"]) * factor


def _optional_float(value: Any) -> float | None:
    """A recorded number; None for a value that is absent, empty or not finite."""
    if value is None or str(value).strip() == "":
        return None
    number = float(value)
    return number if np.isfinite(number) else None


def _required_float(value: Any, message: str) -> float:
    number = _optional_float(value)
    if number is None:
        raise EdxtomoInputError(message)
    return number


def _detector_names(value: Any) -> tuple[str, ...]:
    if value is None or str(value).strip() == "":
        return ()
    values = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    return tuple(sorted(str(v) for v in values))
