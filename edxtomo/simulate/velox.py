"""Write Velox EMD (version 11) spectrum-image files that rosettasciio's Velox reader opens.

Layout written (HDF5; every JSON document is UTF-8 text)::

    Version                                   {"version": "11", "format": "Velox"}
    Data/SpectrumStream/<uuid>/Data           uint16 (n, 1): the event stream of 1 detector
    Data/SpectrumStream/<uuid>/AcquisitionSettings, Metadata, FrameLocationTable
    Data/Spectrum/<uuid>/Data                 uint32 (n_channels, 1): that detector's sum
    Data/SpectrumImage/<uuid>/SpectrumImageSettings, Metadata   (frame range)
    Data/Image/<uuid>/Data                    (ny, nx, 1) STEM image (HAADF ...), Metadata
    Displays/ImageDisplay/<uuid>              names each image ("HAADF")
    SharedProperties/...                      data references, element selection
    Features/Features, Features/SIFeature/<uuid>

The stream of one detector lists, pixel after pixel in raster order and frame after frame,
the channel index of every count in that pixel, each pixel closed by the marker 65535.
``Metadata`` is a JSON document stored as a ``(n_bytes, n_frames)`` uint8 array (one column
per frame, as Velox does); rosettasciio reads column 0. Velox's own compressed spectrum cube
(``Data/SpectrumImage/<uuid>/Data``) has an undocumented encoding and is not written:
rosettasciio reads the stream instead.

Nothing in a file depends on the clock: UUIDs come from ``uuid_seed`` and the acquisition
time is fixed, so equal inputs give identical bytes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from edxtomo.errors import EdxtomoInputError
from edxtomo.io import atomic_path

log = logging.getLogger(__name__)

PIXEL_MARKER = 65535
VELOX_VERSION = "11"
DETECTOR_PREFIX = "SuperXG2"  # Super-X segments are named SuperXG21 ... SuperXG24
STREAM_CHUNK = 8192


@dataclass(frozen=True)
class XrayEvents:
    """Detected X-rays of one spectrum image, one entry per count.

    Attributes
    ----------
    frame, y, x, channel, detector : ndarray of int, shape (n,)
        Frame index, pixel row and column, energy channel and detector segment of each
        count.
    """

    frame: np.ndarray
    y: np.ndarray
    x: np.ndarray
    channel: np.ndarray
    detector: np.ndarray

    def __post_init__(self) -> None:
        sizes = {np.shape(getattr(self, name)) for name in self.__dataclass_fields__}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise EdxtomoInputError(f"event arrays must be 1D and of equal length, got {sizes}")

    def __len__(self) -> int:
        return int(self.frame.shape[0])

    @classmethod
    def from_counts(cls, coords: Sequence[np.ndarray], counts: np.ndarray,
                    detector: int | np.ndarray = 0) -> XrayEvents:
        """Events from sparse counts: ``coords = (frame, y, x, channel)``, ``counts`` >= 0."""
        counts = np.asarray(counts, dtype=np.int64)
        frame, y, x, channel = (np.repeat(np.asarray(c, dtype=np.int64), counts) for c in coords)
        det = np.repeat(np.broadcast_to(np.asarray(detector, dtype=np.int64), counts.shape),
                        counts)
        return cls(frame, y, x, channel, det)

    @classmethod
    def concatenate(cls, parts: Sequence[XrayEvents]) -> XrayEvents:
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in cls.__dataclass_fields__))


@dataclass(frozen=True)
class VeloxSettings:
    """Calibrations and instrument settings written into the file.

    Attributes
    ----------
    pixel_size_nm : float
    n_channels : int
    dispersion_ev : float
        Channel width in eV.
    energy_offset_ev : float
        Energy of channel 0 in eV (rosettasciio's axis offset).
    beam_energy_kev : float
    tilt_deg : float or None
        Stage alpha tilt; stored in radians, as Velox does. None writes no
        ``Stage.AlphaTilt``, as a file from a stage that records no tilt.
    elements : sequence of str
        The element selection (may be empty).
    n_frames : int
    n_detectors : int
        EDS detector segments, each with its own stream.
    offset_nm : (float, float)
        Position (x, y) of the first pixel, in nm.
    dwell_time_s : float
        Per pixel and frame.
    elevation_deg : float
        Detector elevation angle.
    instrument : str
        ``Instrument.InstrumentClass``.
    """

    pixel_size_nm: float
    n_channels: int
    dispersion_ev: float
    energy_offset_ev: float
    beam_energy_kev: float
    tilt_deg: float | None
    elements: Sequence[str] = ()
    n_frames: int = 1
    n_detectors: int = 4
    offset_nm: tuple[float, float] = (0.0, 0.0)
    dwell_time_s: float = 1e-5
    elevation_deg: float = 18.0
    instrument: str = "edxtomo simulator"
    extra: Mapping[str, Any] = field(default_factory=dict)


def encode_stream(pixel_index: np.ndarray, channel: np.ndarray, n_pixels: int) -> tuple[
        np.ndarray, np.ndarray]:
    """Velox stream of one detector.

    Parameters
    ----------
    pixel_index : ndarray of int, shape (n,)
        Global pixel index ``frame * n_pixels_per_frame + y * nx + x`` of each count.
    channel : ndarray of int, shape (n,)
    n_pixels : int
        Pixels in all frames together (``n_frames * ny * nx``).

    Returns
    -------
    stream : ndarray of uint16, shape (n + n_pixels,)
        Each pixel's channels (ascending), then the marker 65535.
    pixel_start : ndarray of int64, shape (n_pixels,)
        Position in the stream where each pixel begins.
    """
    order = np.lexsort((channel, pixel_index))
    pixel_index, channel = pixel_index[order], channel[order]
    stream = np.full(pixel_index.size + n_pixels, PIXEL_MARKER, dtype=np.uint16)
    # Event k is preceded by k events and by one marker per earlier pixel.
    stream[np.arange(pixel_index.size) + pixel_index] = channel
    events_before = np.searchsorted(pixel_index, np.arange(n_pixels), side="left")
    return stream, events_before + np.arange(n_pixels)


class _Uuids:
    """Deterministic 32-hex-digit identifiers."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def __call__(self) -> str:
        return self._rng.bytes(16).hex()


def _json_bytes(document: Any) -> bytes:
    return json.dumps(document, indent=4).encode("utf-8")


def _write_json(group: h5py.Group, name: str, document: Any) -> None:
    dataset = group.create_dataset(name, shape=(1,), dtype=h5py.string_dtype("utf-8"))
    dataset[0] = _json_bytes(document)


def _write_metadata(group: h5py.Group, document: Any, n_columns: int = 1) -> None:
    raw = np.frombuffer(_json_bytes(document), dtype=np.uint8)
    group.create_dataset("Metadata", data=np.repeat(raw[:, None], n_columns, axis=1),
                         chunks=(raw.size, 1))


def _num(value: float) -> str:
    """Velox writes numbers as strings with full precision."""
    return repr(float(value))


def _detectors(settings: VeloxSettings, image_names: Sequence[str]) -> dict[str, Any]:
    """The ``Detectors`` block: STEM detectors first, then the EDS segments."""
    detectors: dict[str, Any] = {}
    for name in image_names:
        detectors[f"Detector-{len(detectors)}"] = {
            "DetectorName": name, "DetectorType": "ScanningDetector",
            "Inserted": "true", "Enabled": "true",
        }
    live = settings.dwell_time_s * settings.n_frames
    for k in range(settings.n_detectors):
        detectors[f"Detector-{len(detectors)}"] = {
            "DetectorName": f"{DETECTOR_PREFIX}{k + 1}",
            "DetectorType": "AnalyticalDetector",
            "Inserted": "true", "Enabled": "true",
            "ElevationAngle": _num(np.deg2rad(settings.elevation_deg)),
            "AzimuthAngle": _num(np.deg2rad(45 + 90 * k)),
            "CollectionAngle": "0.7",
            "Dispersion": _num(settings.dispersion_ev),
            "OffsetEnergy": _num(settings.energy_offset_ev),
            "RealTime": _num(live), "LiveTime": _num(live),
        }
    return detectors


def _base_metadata(settings: VeloxSettings, shape_yx: tuple[int, int],
                   detectors: dict[str, Any]) -> dict[str, Any]:
    ny, nx = shape_yx
    pixel_m = settings.pixel_size_nm * 1e-9
    frame_time = settings.dwell_time_s * nx * ny
    return {
        "Core": {"MetadataDefinitionVersion": "7.9", "MetadataSchemaVersion": "v1/2013/07"},
        "Instrument": {"Manufacturer": "edxtomo", "InstrumentClass": settings.instrument,
                       "InstrumentModel": "simulated"},
        # A fixed time: files must not depend on the clock.
        "Acquisition": {"AcquisitionStartDatetime": {"DateTime": "0"}},
        "Optics": {"AccelerationVoltage": _num(settings.beam_energy_kev * 1000),
                   "FullScanFieldOfView": {"x": _num(nx * pixel_m), "y": _num(ny * pixel_m)}},
        "Stage": _stage(settings.tilt_deg),
        "Scan": {"ScanSize": {"width": str(nx), "height": str(ny)},
                 "DwellTime": _num(settings.dwell_time_s),
                 "LineTime": _num(settings.dwell_time_s * nx),
                 "FrameTime": _num(frame_time), "ScanRotation": "0"},
        "Detectors": detectors,
        "Sample": "",
        "CustomProperties": {key: {"type": "string", "value": str(value)}
                             for key, value in settings.extra.items()},
    }


def _stage(tilt_deg: float | None) -> dict[str, Any]:
    alpha = {} if tilt_deg is None else {"AlphaTilt": _num(np.deg2rad(tilt_deg))}
    return {**alpha, "BetaTilt": "0", "Position": {"x": "0", "y": "0", "z": "0"}}


def _binary_result(settings: VeloxSettings, detector: str, index: int | None) -> dict[str, Any]:
    pixel_m = _num(settings.pixel_size_nm * 1e-9)
    result = {
        "AcquisitionUnit": "", "CompositionType": "", "Detector": detector,
        "PixelSize": {"width": pixel_m, "height": pixel_m},
        "PixelUnitX": "m", "PixelUnitY": "m",
        "Offset": {"x": _num(settings.offset_nm[0] * 1e-9),
                   "y": _num(settings.offset_nm[1] * 1e-9)},
        "Encoding": "",
    }
    if index is not None:
        result["DetectorIndex"] = str(index)
    return result


def _check_events(path: Path, events: XrayEvents, shape_yx: tuple[int, int],
                  settings: VeloxSettings) -> None:
    bounds = {"frame": settings.n_frames, "y": shape_yx[0], "x": shape_yx[1],
              "channel": settings.n_channels, "detector": settings.n_detectors}
    for name, upper in bounds.items():
        values = getattr(events, name)
        if values.size and (values.min() < 0 or values.max() >= upper):
            raise EdxtomoInputError(
                f"{path}: event {name} values span {values.min()}..{values.max()}, "
                f"outside [0, {upper})"
            )
    if settings.n_channels >= PIXEL_MARKER:
        raise EdxtomoInputError(f"{path}: {settings.n_channels} channels do not fit the "
                                "uint16 stream (the marker is 65535)")


def write_velox_emd(
    path: str | os.PathLike,
    events: XrayEvents,
    images: Mapping[str, np.ndarray],
    settings: VeloxSettings,
    *,
    uuid_seed: int = 0,
    compression: str | None = None,
) -> Path:
    """Write one spectrum image and its STEM images as a Velox EMD file.

    Parameters
    ----------
    path : path-like
        Output ``.emd`` file, written atomically.
    events : XrayEvents
        Every detected count; frames, pixels, channels and detector segments must lie
        within ``settings``.
    images : mapping of str to ndarray (ny, nx)
        STEM images by detector name (``{"HAADF": image}``), float32 or integer. At least
        one is needed: rosettasciio takes the scan size from the first image.
    settings : VeloxSettings
    uuid_seed : int
        Seed of the group identifiers (equal seeds give identical files).
    compression : {None, "gzip"}
        HDF5 filter for the streams (Velox writes none; rosettasciio reads both).

    Returns
    -------
    Path
    """
    path = Path(path)
    if not images:
        raise EdxtomoInputError(f"{path}: a Velox spectrum image needs at least one STEM image")
    shapes = {np.shape(im) for im in images.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise EdxtomoInputError(f"{path}: STEM images must be 2D and of one shape, got {shapes}")
    shape_yx = next(iter(shapes))
    _check_events(path, events, shape_yx, settings)

    uuid = _Uuids(uuid_seed)
    names = list(images)
    detectors = _detectors(settings, names)
    base = _base_metadata(settings, shape_yx, detectors)
    n_pix_frame = shape_yx[0] * shape_yx[1]
    global_pixel = (events.frame * n_pix_frame + events.y * shape_yx[1] + events.x)

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write_json(f, "Version", {"version": VELOX_VERSION, "format": "Velox"})
        refs = f.create_group("SharedProperties/DataReference")
        image_refs = f.create_group("SharedProperties/ImageSeriesDataReference")
        displays = f.create_group("Displays/ImageDisplay")
        f.create_group("Displays/DisplayGroup")

        def reference(group: h5py.Group, data_path: str, **extra: Any) -> str:
            key = uuid()
            _write_json(group, key, {"dataPath": data_path, **extra})
            return f"{group.name}/{key}"

        stem_refs = []
        for index, name in enumerate(names):
            key = uuid()
            group = f.create_group(f"Data/Image/{key}")
            data = np.asarray(images[name])
            group.create_dataset("Data", data=data[:, :, None], chunks=(*shape_yx, 1))
            group.create_dataset("FrameLookupTable", data=np.zeros(1, dtype=np.uint32))
            _write_metadata(group, {**base, "BinaryResult": _binary_result(settings, name, index)})
            data_ref = reference(image_refs, group.name, frameIndex=0)
            stem_refs.append({"data": reference(image_refs, group.name),
                              "physicalDetector": name})
            _write_json(displays, uuid(), {"data": data_ref, "id": name, "title": name})

        si_key = uuid()
        si = f.create_group(f"Data/SpectrumImage/{si_key}")
        _write_json(si, "SpectrumImageSettings",
                    {"startFramePosition": "1", "endFramePosition": str(settings.n_frames)})
        _write_metadata(si, {**base, "BinaryResult": _binary_result(settings, DETECTOR_PREFIX,
                                                                     None)})
        segments = []
        # Readers list the streams in key order: sorted keys keep the detector order.
        stream_keys = sorted(uuid() for _ in range(settings.n_detectors))
        for k in range(settings.n_detectors):
            mine = events.detector == k
            det_name = f"{DETECTOR_PREFIX}{k + 1}"
            det_index = len(names) + k
            stream, pixel_start = encode_stream(global_pixel[mine], events.channel[mine],
                                                settings.n_frames * n_pix_frame)
            group = f.create_group(f"Data/SpectrumStream/{stream_keys[k]}")
            group.create_dataset("Data", data=stream[:, None],
                                 chunks=(min(STREAM_CHUNK, stream.size), 1),
                                 compression=compression)
            _write_json(group, "AcquisitionSettings", {
                "encoding": "uint16", "bincount": str(settings.n_channels),
                "StreamEncoding": "uint16", "Size": str(stream.size),
                "RasterScanDefinition": {"Width": str(shape_yx[1]), "Height": str(shape_yx[0])},
            })
            frame_starts = pixel_start[::n_pix_frame].astype(np.uint64)
            group.create_dataset("FrameLocationTable", data=frame_starts[:, None])
            metadata = {**base, "BinaryResult": _binary_result(settings, det_name, det_index)}
            _write_metadata(group, metadata, settings.n_frames)

            spectrum = f.create_group(f"Data/Spectrum/{uuid()}")
            summed = np.bincount(events.channel[mine], minlength=settings.n_channels)
            spectrum.create_dataset("Data", data=summed.astype(np.uint32)[:, None])
            _write_metadata(spectrum, metadata)
            segments.append({
                "index": k + 1, "summed": True,
                "spectrumStream": reference(refs, group.name),
                "renderedSpectrum": reference(refs, spectrum.name),
            })

        quantification = {"ionizationCrossSectionModel": "BrownPowell"}
        if settings.elements:
            quantification["elementSelection"] = [
                _atomic_number(path, el) for el in settings.elements
            ]
        quant_key = uuid()
        _write_json(f.create_group("SharedProperties/EDSSpectrumQuantificationSettings"),
                    quant_key, quantification)
        feature_key = uuid()
        _write_json(f.create_group("Features/SIFeature"), feature_key, {
            "eds": {"detectors": [{"physicalDetector": DETECTOR_PREFIX, "segments": segments}],
                    "quantificationSettings":
                        f"/SharedProperties/EDSSpectrumQuantificationSettings/{quant_key}",
                    "spectrumImage": reference(refs, si.name)},
            "stem": {"stemDetectors": stem_refs},
        })
        _write_json(f["Features"], "Features",
                    {"features": [{"SIFeature": f"/Features/SIFeature/{feature_key}"}]})
    log.info("wrote %s: %d counts, %d frames, %d detectors, tilt %s deg", path, len(events),
             settings.n_frames, settings.n_detectors, settings.tilt_deg)
    return path


def _atomic_number(path: Path, element: str) -> int:
    from rsciio.utils._elements import atomic_number2name

    for number, name in atomic_number2name.items():
        if name == element:
            return int(number)
    raise EdxtomoInputError(f"{path}: unknown element {element!r} in the element selection")
