"""Raw acquisitions: spectrum images and HAADF images read through rosettasciio.

One file at a time, lazily: :func:`read_spectrum_image` gives the EDS spectrum image of a
Velox ``.emd``, Bruker ``.bcf`` or any format rosettasciio reads, :func:`acquisition_of`
its calibration (:class:`Acquisition`), :func:`read_haadf` its HAADF image. Every read
error is an :class:`~edxtomo.errors.EdxtomoInputError` that names the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError


def _load_signal(path: str | os.PathLike):
    """``hyperspy.api.load`` with errors turned into :class:`EdxtomoInputError`."""
    import hyperspy.api as hs

    path = Path(path)
    if not path.exists():
        raise EdxtomoInputError(f"{path}: file not found")
    try:
        signal = hs.load(path, lazy=False)
    except Exception as exc:  # readers raise many types for corrupt files
        raise EdxtomoInputError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    if isinstance(signal, list):
        raise EdxtomoInputError(f"{path}: holds {len(signal)} signals; expected one stack")
    return signal


#: dask chunk size for lazily read spectrum images: a Velox spectrum stream is held as a
#: sparse array that dask densifies one chunk at a time, so this bounds the memory per chunk.
SPECTRUM_IMAGE_CHUNK = "32MiB"

#: Reader options per file extension. Velox: the spectrum image only, each EDS detector on
#: its own (the caller sums them), frames summed unless asked otherwise.
_SPECTRUM_IMAGE_OPTIONS: dict[str, dict[str, Any]] = {
    "emd": {"select_type": "spectrum_image", "sum_EDS_detectors": False},
    "bcf": {"select_type": "spectrum_image"},
}
_IMAGE_OPTIONS: dict[str, dict[str, Any]] = {
    "emd": {"select_type": "images", "load_SI_image_stack": True},
    "bcf": {"select_type": "image"},
}
_PIXEL_SIZE_RTOL = 1e-3


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
        Number of frames when the data has a frame axis (Velox with frames kept, or any
        spectrum image with three navigation axes), else None.
    energy_offset_keV, energy_scale_keV : float
        Energy of channel 0 and channel width, in keV.
    n_channel : int
        Number of energy channels.
    beam_energy_keV : float
        Accelerating voltage in kV.
    resolution_mnka_eV : float
        Detector energy resolution (FWHM at Mn Ka) in eV; exspy's default, 130 eV, when the
        file records none (Velox files as rosettasciio reads them).
    elements : tuple of str
        Element selection stored in the file (may be empty).
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

    @property
    def energy_keV(self) -> np.ndarray:
        """Energy of each channel in keV, shape ``(n_channel,)``."""
        return self.energy_offset_keV + self.energy_scale_keV * np.arange(self.n_channel)


def _extension(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def check_raw_file(path: str | os.PathLike) -> Path:
    """Check that ``path`` exists and has an extension that rosettasciio reads.

    Raises
    ------
    EdxtomoInputError
        Missing file, or a format no rosettasciio plugin declares.
    """
    from rsciio import IO_PLUGINS

    path = Path(path)
    if not path.is_file():
        raise EdxtomoInputError(f"{path}: file not found")
    known = {ext.lower() for plugin in IO_PLUGINS for ext in plugin["file_extensions"]}
    if _extension(path) not in known:
        raise EdxtomoInputError(
            f"{path}: unknown format {path.suffix!r}: no rosettasciio reader handles it "
            "(use Velox .emd, Bruker .bcf or another EDS spectrum-image format it supports)"
        )
    return path


def _load_raw(path: Path, lazy: bool, **options: Any) -> list:
    """``hyperspy.api.load`` of a raw file as a list of signals; read errors name the file."""
    import dask
    import hyperspy.api as hs

    try:
        with dask.config.set({"array.chunk-size": SPECTRUM_IMAGE_CHUNK}):
            signals = hs.load(path, lazy=lazy, **options)
    except Exception as exc:  # readers raise many types for corrupt or truncated files
        raise EdxtomoInputError(
            f"{path}: cannot be read, corrupt or truncated? ({type(exc).__name__}: {exc})"
        ) from exc
    return signals if isinstance(signals, list) else [signals]


def read_spectrum_image(path: str | os.PathLike, *, keep_frames: bool = False) -> list:
    """Read the EDS spectrum image of one raw file lazily, one signal per EDS detector.

    Velox files give one signal per detector (sum them: counts add); other formats give one.
    Nothing dense is built here: Velox streams come as dask arrays over sparse arrays.

    Parameters
    ----------
    path : path-like
        A raw file that rosettasciio reads (Velox ``.emd``, Bruker ``.bcf``, ...).
    keep_frames : bool
        Keep the frames of a Velox acquisition as a leading navigation axis.

    Returns
    -------
    list of LazyEDSSpectrum
        Each with data ``(ny, nx, n_channel)``, or ``(n_frame, ny, nx, n_channel)`` with
        frames kept, and identical axes.

    Raises
    ------
    EdxtomoInputError
        Unreadable file, no EDS spectrum image in it, or several that are not detectors of
        one acquisition.
    """
    path = check_raw_file(path)
    options = dict(_SPECTRUM_IMAGE_OPTIONS.get(_extension(path), {}))
    if _extension(path) == "emd":
        options["sum_frames"] = not keep_frames
    found = [
        s for s in _load_raw(path, lazy=True, **options)
        if str(s.metadata.get_item("Signal.signal_type", "")).startswith("EDS")
        and s.axes_manager.signal_dimension == 1
        and s.axes_manager.navigation_dimension >= 2
    ]
    if not found:
        raise EdxtomoInputError(
            f"{path}: no EDS spectrum image in the file (a Velox file saved as 'reduced data' "
            "keeps only its maps: extract maps in Velox and use the maps route instead)"
        )
    if len(found) > 1 and options.get("sum_EDS_detectors", True):
        raise EdxtomoInputError(
            f"{path}: holds {len(found)} EDS spectrum images; expected one per acquisition"
        )
    shapes = {s.data.shape for s in found}
    if len(shapes) > 1:
        raise EdxtomoInputError(f"{path}: EDS detectors with different shapes {sorted(shapes)}")
    return found


def read_haadf(path: str | os.PathLike) -> np.ndarray | None:
    """The HAADF image of a raw file, averaged over its frames; None when it has none.

    Returns
    -------
    ndarray, shape (ny, nx), float32, or None
        The image whose title names the HAADF detector.
    """
    path = check_raw_file(path)
    options = _IMAGE_OPTIONS.get(_extension(path), {})
    for signal in _load_raw(path, lazy=False, **options):
        title = str(signal.metadata.get_item("General.title", ""))
        if "HAADF" in title.upper() and signal.axes_manager.signal_dimension == 2:
            data = np.asarray(signal.data, dtype=np.float32)
            return data.mean(axis=0) if data.ndim == 3 else data
    return None


def tilt_angle_deg(signal) -> float | None:
    """Stage tilt alpha in degrees from the metadata of a HyperSpy signal (TEM or SEM)."""
    for microscope in ("TEM", "SEM"):
        value = signal.metadata.get_item(f"Acquisition_instrument.{microscope}.Stage.tilt_alpha")
        if value is not None:
            return float(value)
    return None


def pixel_size_nm_of(axes: list, source: str | os.PathLike) -> float | None:
    """Pixel size in nm of two spatial HyperSpy axes, None when they carry no length unit.

    Parameters
    ----------
    axes : list of DataAxis
        The x and y axes (modified in place: converted to nm).
    source : path-like
        Named in the error message.

    Raises
    ------
    EdxtomoInputError
        Pixels that are not square.
    """
    sizes = []
    for axis in axes:
        try:
            axis.convert_to_units("nm")
        except Exception:  # pint raises several types for units it does not know
            return None
        if axis.units != "nm":
            return None
        # 12 significant digits: undo the float noise of unit conversions (0.7 nm, not
        # 0.6999999999999998 nm); no calibration is known that well.
        sizes.append(float(f"{abs(float(axis.scale)):.12g}"))
    if not np.isclose(sizes[0], sizes[1], rtol=_PIXEL_SIZE_RTOL, atol=0):
        raise EdxtomoInputError(
            f"{source}: pixels are not square ({sizes[0]:.6g} nm by {sizes[1]:.6g} nm)"
        )
    return sizes[0]


def acquisition_of(signal, path: str | os.PathLike) -> Acquisition:
    """Read the calibration of a spectrum image returned by :func:`read_spectrum_image`."""
    path = Path(path)
    axes = signal.axes_manager
    energy = axes.signal_axes[0]
    if energy.units == "eV":
        energy.convert_to_units("keV")
    if energy.units != "keV":
        raise EdxtomoInputError(f"{path}: energy axis in {energy.units!r}; expected keV or eV")
    nav_shape = signal.data.shape[:-1]
    meta = signal.metadata
    microscope = "TEM" if meta.has_item("Acquisition_instrument.TEM") else "SEM"
    beam = meta.get_item(f"Acquisition_instrument.{microscope}.beam_energy")
    if beam is None:
        raise EdxtomoInputError(f"{path}: no beam energy in the metadata")
    resolution = meta.get_item(
        f"Acquisition_instrument.{microscope}.Detector.EDS.energy_resolution_MnKa", 130.0
    )
    return Acquisition(
        path=path,
        angle_deg=tilt_angle_deg(signal),
        pixel_size_nm=pixel_size_nm_of(list(axes.navigation_axes[:2]), path),
        image_shape=tuple(int(n) for n in nav_shape[-2:]),
        n_frame=int(nav_shape[0]) if len(nav_shape) == 3 else None,
        energy_offset_keV=float(energy.offset),
        energy_scale_keV=float(energy.scale),
        n_channel=int(energy.size),
        beam_energy_keV=float(beam),
        resolution_mnka_eV=float(resolution),
        elements=tuple(str(e) for e in meta.get_item("Sample.elements", [])),
    )
