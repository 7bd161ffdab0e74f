"""Data model and file formats shared by every stage.

A tilt series is a set of channels (``"HAADF"`` and one per element symbol), each a stack
of shape ``(n_tilt, ny, nx)``, or ``(n_tilt, n_frame, ny, nx)`` when frames are kept, with
the tilt angles in degrees and the pixel size in nm.

On disk every stack is a HyperSpy ``.hspy`` file with calibrated axes (tilt in degrees,
y and x in nm) and the angles in ``metadata.Tomography.tilts`` (the layout that
``etspy.load`` reads), so it also opens as an ``etspy.TomoStack``. Volumes of shape
``(nz, ny, nx)`` are written as ImageJ TIFF with the voxel size in nm (Fiji, napari and
Tomviz read it) and as ``.hspy`` beside it.

Every writer goes through :func:`atomic_path`, so a failure never leaves a partial file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError

log = logging.getLogger(__name__)

HAADF = "HAADF"
TILT_AXIS_NAME = "Projections"
FRAME_AXIS_NAME = "Frames"


@dataclass
class TiltSeries:
    """A calibrated STEM-EDX tilt series.

    Attributes
    ----------
    channels : dict of str to ndarray
        ``"HAADF"`` (optional) and one entry per element symbol. Each array is
        ``(n_tilt, ny, nx)``, or ``(n_tilt, n_frame, ny, nx)`` with frames kept.
        X-ray maps stay integer counts until a stage needs floats.
    angles_deg : ndarray, shape (n_tilt,)
        Tilt angles in degrees, sorted ascending.
    pixel_size_nm : float
        Pixel size in nm, the same along y and x.
    provenance : dict
        Free-form description of where the data came from: source files, X-ray lines,
        integration and background windows, beam energy. Per-channel entries live under
        ``provenance["channels"][name]``.
    background : dict of str to ndarray
        Per element, the expected background counts (bremsstrahlung under the line) inside
        that element's integration window, float ``(n_tilt, ny, nx)``, summed over frames.
        The element channel holds the gross window counts, which keep Poisson statistics;
        net counts are ``gross - background`` (see :meth:`net_counts`). Empty when the maps
        are already net intensities.
    """

    channels: dict[str, np.ndarray]
    angles_deg: np.ndarray
    pixel_size_nm: float
    provenance: dict[str, Any] = field(default_factory=dict)
    background: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.angles_deg = np.asarray(self.angles_deg, dtype=float)
        if not self.channels:
            raise EdxtomoInputError("a tilt series needs at least one channel")
        n_tilt = self.angles_deg.shape[0]
        for name, data in self.channels.items():
            if data.ndim not in (3, 4) or data.shape[0] != n_tilt:
                raise EdxtomoInputError(
                    f"channel {name!r} has shape {data.shape}; expected (n_tilt={n_tilt}, ny, nx)"
                    " or (n_tilt, n_frame, ny, nx)"
                )
        for name, data in self.background.items():
            if name not in self.channels or data.shape != self.summed(name).shape:
                raise EdxtomoInputError(
                    f"background {name!r} of shape {data.shape} matches no channel of that shape"
                )
        if not np.isfinite(self.pixel_size_nm) or self.pixel_size_nm <= 0:
            raise EdxtomoInputError(f"pixel size must be positive, got {self.pixel_size_nm} nm")

    @property
    def elements(self) -> list[str]:
        """Element channels, in insertion order (HAADF excluded)."""
        return [name for name in self.channels if name != HAADF]

    @property
    def haadf(self) -> np.ndarray | None:
        """The HAADF stack, or None when the series has none."""
        return self.channels.get(HAADF)

    @property
    def n_tilt(self) -> int:
        return int(self.angles_deg.shape[0])

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of one projection."""
        first = next(iter(self.channels.values()))
        return tuple(first.shape[-2:])

    def summed(self, name: str) -> np.ndarray:
        """Channel ``name`` summed over frames: ``(n_tilt, ny, nx)``, dtype kept."""
        data = self.channels[name]
        return data.sum(axis=1, dtype=data.dtype) if data.ndim == 4 else data

    def net_counts(self, name: str) -> np.ndarray:
        """Frame-summed channel minus its background, float32 ``(n_tilt, ny, nx)``."""
        net = self.summed(name).astype(np.float32)
        if name in self.background:
            net -= self.background[name].astype(np.float32)
        return net


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it into place on success.

    The temporary name keeps the suffix of ``path``, so writers that choose their format
    from the extension still work. On any exception the temporary file is removed and
    ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _tilt_axis(angles_deg: np.ndarray) -> dict[str, Any]:
    """HyperSpy axis dictionary for the tilt axis.

    The axis is uniform (first angle, mean step), as ``etspy`` expects; for unevenly spaced
    tilts the exact angles are those of ``metadata.Tomography.tilts``.
    """
    angles_deg = np.asarray(angles_deg, dtype=float)
    step = float(np.diff(angles_deg).mean()) if angles_deg.size > 1 else 1.0
    return {"name": TILT_AXIS_NAME, "units": "degrees", "size": angles_deg.size,
            "offset": float(angles_deg[0]), "scale": step, "navigate": True}


def _spatial_axes(shape_yx: tuple[int, int], pixel_size_nm: float) -> list[dict[str, Any]]:
    return [
        {"name": name, "units": "nm", "size": size, "offset": 0.0, "scale": float(pixel_size_nm),
         "navigate": False}
        for name, size in zip(("y", "x"), shape_yx, strict=True)
    ]


def write_stack(
    path: str | os.PathLike,
    data: np.ndarray,
    angles_deg: np.ndarray,
    pixel_size_nm: float,
    title: str,
    provenance: Mapping[str, Any] | None = None,
) -> None:
    """Write one channel of a tilt series as a calibrated ``.hspy`` stack.

    Parameters
    ----------
    path : path-like
        Output ``.hspy`` file.
    data : ndarray, shape (n_tilt, ny, nx) or (n_tilt, n_frame, ny, nx)
        Counts or intensities; the dtype is kept.
    angles_deg : ndarray, shape (n_tilt,)
        Tilt angles in degrees.
    pixel_size_nm : float
        Pixel size in nm.
    title : str
        Channel name (``"HAADF"`` or an element symbol).
    provenance : mapping, optional
        Stored under ``metadata.edxtomo``; values must be HDF5-serialisable
        (numbers, strings, lists, nested dicts).
    """
    import hyperspy.api as hs

    angles_deg = np.asarray(angles_deg, dtype=float)
    if data.shape[0] != angles_deg.size:
        raise EdxtomoInputError(
            f"{path}: {data.shape[0]} images but {angles_deg.size} angles for channel {title!r}"
        )
    axes = [_tilt_axis(angles_deg)]
    if data.ndim == 4:
        axes.append({"name": FRAME_AXIS_NAME, "units": "images", "size": data.shape[1],
                     "navigate": True})
    axes += _spatial_axes(data.shape[-2:], pixel_size_nm)
    metadata = {
        "General": {"title": title},
        "Tomography": {"tilts": angles_deg, "tiltaxis": 0.0, "xshift": 0.0, "yshift": 0.0,
                       "cropped": False},
        "edxtomo": dict(provenance or {}),
    }
    _save_hspy(hs.signals.Signal2D(data, axes=axes, metadata=metadata), path)


def read_stack(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, float, dict[str, Any]]:
    """Read a stack written by :func:`write_stack`.

    Returns
    -------
    data : ndarray, shape (n_tilt, ny, nx) or (n_tilt, n_frame, ny, nx)
    angles_deg : ndarray, shape (n_tilt,)
    pixel_size_nm : float
    provenance : dict
        The ``metadata.edxtomo`` tree.
    """
    signal = _load_signal(path)
    meta = signal.metadata
    if not meta.has_item("Tomography.tilts"):
        raise EdxtomoInputError(f"{path}: no tilt angles in metadata.Tomography.tilts")
    angles_deg = np.asarray(meta.Tomography.tilts, dtype=float).ravel()
    pixel_size_nm = float(signal.axes_manager.signal_axes[0].scale)
    provenance = meta.edxtomo.as_dictionary() if meta.has_item("edxtomo") else {}
    data = np.asarray(signal.data)
    if data.shape[0] != angles_deg.size:
        raise EdxtomoInputError(
            f"{path}: {data.shape[0]} images but {angles_deg.size} tilt angles"
        )
    return data, angles_deg, pixel_size_nm, provenance


BACKGROUND_DIR = "background"


def save_tilt_series(series: TiltSeries, directory: str | os.PathLike) -> list[Path]:
    """Write every channel of ``series`` as ``directory/{channel}.hspy``.

    Backgrounds go to ``directory/background/{element}.hspy``. Returns the written paths.
    """
    directory = Path(directory)
    channel_provenance = series.provenance.get("channels", {})
    common = {k: v for k, v in series.provenance.items() if k != "channels"}
    paths = []
    for name, data in series.channels.items():
        provenance = {**common, **channel_provenance.get(name, {})}
        paths.append(directory / f"{name}.hspy")
        write_stack(paths[-1], data, series.angles_deg, series.pixel_size_nm, name, provenance)
    for name, data in series.background.items():
        paths.append(directory / BACKGROUND_DIR / f"{name}.hspy")
        write_stack(paths[-1], data, series.angles_deg, series.pixel_size_nm, name,
                    {"quantity": "expected background counts in the integration window"})
    return paths


def load_tilt_series(
    directory: str | os.PathLike, channels: list[str] | None = None
) -> TiltSeries:
    """Read ``directory/{channel}.hspy`` stacks into one :class:`TiltSeries`.

    Parameters
    ----------
    directory : path-like
        A stage folder such as ``results/{sample}/extracted``.
    channels : list of str, optional
        Channels to read; default all ``*.hspy`` files in the folder, HAADF first.
    """
    directory = Path(directory)
    if channels is None:
        channels = sorted((p.stem for p in directory.glob("*.hspy")), key=lambda c: c != HAADF)
    if not channels:
        raise EdxtomoInputError(f"{directory}: no channel stacks (*.hspy) found")
    stacks, provenance = {}, {"channels": {}}
    angles_ref = pixel_ref = None
    for name in channels:
        path = directory / f"{name}.hspy"
        data, angles_deg, pixel_size_nm, prov = read_stack(path)
        if angles_ref is None:
            angles_ref, pixel_ref = angles_deg, pixel_size_nm
        elif not np.allclose(angles_deg, angles_ref) or not np.isclose(pixel_size_nm, pixel_ref):
            raise EdxtomoInputError(
                f"{path}: angles or pixel size differ from those of {channels[0]}.hspy"
            )
        stacks[name] = data
        provenance["channels"][name] = prov
    background = {
        name: read_stack(directory / BACKGROUND_DIR / f"{name}.hspy")[0]
        for name in channels
        if (directory / BACKGROUND_DIR / f"{name}.hspy").exists()
    }
    return TiltSeries(stacks, angles_ref, pixel_ref, provenance, background)


def write_volume(
    path: str | os.PathLike,
    volume: np.ndarray,
    voxel_size_nm: float,
    title: str,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write a volume as ImageJ TIFF and as ``.hspy`` beside it.

    Parameters
    ----------
    path : path-like
        The ``.tif`` path; the ``.hspy`` file gets the same stem.
    volume : ndarray, shape (nz, ny, nx)
        Written as float32.
    voxel_size_nm : float
        Isotropic voxel size in nm, stored as the TIFF resolution and ImageJ spacing.
    title : str
        Channel name.
    metadata : mapping, optional
        Stored under ``metadata.edxtomo`` of the ``.hspy`` file.

    Returns
    -------
    (tif_path, hspy_path)
    """
    import hyperspy.api as hs
    import tifffile

    volume = np.ascontiguousarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"a volume must be (nz, ny, nx), got shape {volume.shape}")
    tif_path = Path(path)
    hspy_path = tif_path.with_suffix(".hspy")
    pixels_per_nm = 1.0 / voxel_size_nm
    with atomic_path(tif_path) as tmp:
        tifffile.imwrite(
            tmp,
            volume,
            imagej=True,
            resolution=(pixels_per_nm, pixels_per_nm),
            metadata={"spacing": voxel_size_nm, "unit": "nm", "axes": "ZYX", "Info": title},
        )
    axes = [
        {"name": name, "units": "nm", "size": size, "offset": 0.0, "scale": float(voxel_size_nm),
         "navigate": name == "z"}
        for name, size in zip(("z", "y", "x"), volume.shape, strict=True)
    ]
    signal = hs.signals.Signal2D(
        volume, axes=axes, metadata={"General": {"title": title}, "edxtomo": dict(metadata or {})}
    )
    _save_hspy(signal, hspy_path)
    return tif_path, hspy_path


def write_labels(path: str | os.PathLike, labels: np.ndarray, voxel_size_nm: float) -> Path:
    """Write a label volume as a uint16 ImageJ TIFF with the voxel size in nm.

    ImageJ TIFF holds no 32-bit integers; 65,535 labels are far more particles than one
    field of view shows.

    Parameters
    ----------
    path : path-like
        Output ``.tif``.
    labels : ndarray of int, shape (nz, ny, nx)
        0 for background, 1..N for the objects, N < 65536.
    voxel_size_nm : float
    """
    import tifffile

    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"labels must lie in [0, 65535], got [{labels.min()}, {labels.max()}]")
    path = Path(path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(labels, dtype=np.uint16), imagej=True,
                         resolution=(1.0 / voxel_size_nm, 1.0 / voxel_size_nm),
                         metadata={"spacing": voxel_size_nm, "unit": "nm", "axes": "ZYX"})
    return path


def read_volume_folder(directory: str | os.PathLike) -> tuple[dict[str, np.ndarray], float]:
    """Read every ``{channel}.tif`` volume of a reconstruction folder.

    Returns
    -------
    volumes : dict of str to ndarray, each (nz, ny, nx) float32
        By channel name, HAADF first, then the elements in name order.
    voxel_size_nm : float

    Raises
    ------
    EdxtomoInputError
        No volume in the folder, or volumes whose shapes or voxel sizes differ.
    """
    directory = Path(directory)
    paths = sorted(directory.glob("*.tif"), key=lambda p: (p.stem != HAADF, p.stem))
    if not paths:
        raise EdxtomoInputError(f"{directory}: no volumes (*.tif) found")
    volumes, voxel_sizes = {}, {}
    for path in paths:
        volumes[path.stem], voxel_sizes[path.stem] = read_volume(path)
    first = paths[0].stem
    for name, volume in volumes.items():
        if volume.shape != volumes[first].shape or not np.isclose(voxel_sizes[name],
                                                                  voxel_sizes[first]):
            raise EdxtomoInputError(
                f"{directory / name}.tif: shape {volume.shape} and voxel size "
                f"{voxel_sizes[name]} nm differ from {first}.tif ({volumes[first].shape}, "
                f"{voxel_sizes[first]} nm)"
            )
    return volumes, voxel_sizes[first]


def _save_hspy(signal, path: str | os.PathLike) -> None:
    """Save ``signal`` as ``.hspy`` without HyperSpy's save timestamp.

    ``Signal.save`` stamps the wall-clock time into the metadata, so two identical runs
    would give different bytes; writing through RosettaSciIO's hspy writer keeps the file a
    function of its content alone.
    """
    from hyperspy.misc.utils import get_object_package_info
    from rsciio.hspy import file_writer

    signal_dict = signal._to_dictionary(add_models=True)
    signal_dict["package_info"] = get_object_package_info(signal)
    with atomic_path(path) as tmp:
        file_writer(str(tmp), signal_dict, show_progressbar=False)


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Read a volume written by :func:`write_volume` (``.tif`` or ``.hspy``).

    Returns
    -------
    volume : ndarray, shape (nz, ny, nx), float32
    voxel_size_nm : float
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                if not tif.pages:
                    raise ValueError("no image in the file")
                volume = tif.asarray()
                spacing = (tif.imagej_metadata or {}).get("spacing")
        except Exception as exc:  # tifffile raises several types for broken files
            raise EdxtomoInputError(f"{path}: not a readable TIFF volume ({exc})") from exc
        if spacing is None:
            raise EdxtomoInputError(f"{path}: no voxel size (ImageJ 'spacing') in the TIFF")
        voxel_size_nm = float(spacing)
    else:
        signal = _load_signal(path)
        volume = np.asarray(signal.data)
        voxel_size_nm = float(signal.axes_manager.signal_axes[0].scale)
    if volume.ndim != 3:
        raise EdxtomoInputError(f"{path}: expected a 3D volume, got shape {volume.shape}")
    return volume.astype(np.float32, copy=False), voxel_size_nm


def read_rawtlt(path: str | os.PathLike) -> np.ndarray:
    """Read an IMOD ``.rawtlt`` file: one tilt angle in degrees per line.

    Returns
    -------
    ndarray, shape (n_tilt,)
        Angles in file order.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise EdxtomoInputError(f"{path}: cannot read the angles file ({exc})") from exc
    angles = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            angles.append(float(line.split()[0]))
        except ValueError as exc:
            raise EdxtomoInputError(
                f"{path}, line {line_no}: {line.strip()!r} is not an angle in degrees"
            ) from exc
    if not angles:
        raise EdxtomoInputError(f"{path}: no tilt angles in the file")
    return np.asarray(angles, dtype=float)


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


# =============================================================================================
# Raw acquisitions: spectrum images and HAADF images read through rosettasciio, one file at
# a time, and the maps route (ready element stacks plus a .rawtlt file).
# =============================================================================================

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


def check_angles(angles_deg: Any, source: str) -> np.ndarray:
    """Tilt angles as a float array; raise on non-finite or duplicate values.

    Parameters
    ----------
    angles_deg : array-like, shape (n_tilt,)
    source : str
        What the angles came from, named in the error message.
    """
    angles = np.asarray(angles_deg, dtype=float).ravel()
    if angles.size == 0:
        raise EdxtomoInputError(f"{source}: no tilt angles")
    if not np.all(np.isfinite(angles)):
        raise EdxtomoInputError(f"{source}: tilt angles must be finite numbers, got {angles}")
    values, counts = np.unique(angles, return_counts=True)
    if np.any(counts > 1):
        raise EdxtomoInputError(
            f"{source}: duplicate tilt angles {values[counts > 1].tolist()} deg"
        )
    return angles


def load_maps_series(
    pattern: str,
    angles_path: str | os.PathLike | None = None,
    elements: list[str] | None = None,
    pixel_size_nm: float | None = None,
    angles_deg: list[float] | None = None,
) -> TiltSeries:
    """Read ready element maps (one stack per element) and their angles as a TiltSeries.

    Parameters
    ----------
    pattern : str
        Path with an ``{element}`` placeholder, e.g. ``data/sqd1/{element}.tif``; each file
        is any HyperSpy-readable stack of shape ``(n_tilt, ny, nx)``. ``{element}=HAADF`` is
        read as the HAADF channel when that file exists.
    angles_path : path-like, optional
        IMOD ``.rawtlt`` file, one angle per image in file order.
    elements : list of str, optional
        Element symbols; default every file that matches the pattern.
    pixel_size_nm : float, optional
        Pixel size in nm; required when the files carry no calibrated length unit.
    angles_deg : list of float, optional
        Tilt angles in degrees, overriding ``angles_path``.

    Returns
    -------
    TiltSeries
        Sorted by angle. Integer maps stay integer counts (``counts: true`` in the channel
        provenance); float maps are marked ``counts: false``. No background (the maps are
        taken as they are).
    """
    import glob
    import re

    if "{element}" not in pattern:
        raise EdxtomoInputError(f"maps pattern {pattern!r} has no {{element}} placeholder")
    if elements is None:
        head, tail = pattern.split("{element}", 1)
        matcher = re.compile(re.escape(head) + r"([A-Z][a-z]?)" + re.escape(tail) + "$")
        found = (matcher.match(p) for p in glob.glob(pattern.replace("{element}", "*")))
        elements = sorted({m.group(1) for m in found if m})
        if not elements:
            raise EdxtomoInputError(f"maps pattern {pattern!r}: no element file matches it")
    if angles_deg is not None and len(angles_deg) > 0:
        angles, angles_source = np.asarray(angles_deg, dtype=float), "angles_deg"
    elif angles_path is not None:
        angles, angles_source = read_rawtlt(angles_path), str(angles_path)
    else:
        raise EdxtomoInputError(f"maps pattern {pattern!r}: give an angles file or angles_deg")
    angles = check_angles(angles, angles_source)
    names = list(elements)
    haadf_path = Path(pattern.replace("{element}", HAADF))
    if HAADF not in names and haadf_path.is_file():
        names.insert(0, HAADF)
    channels, pixel_sizes, provenance = {}, {}, {"route": "maps", "channels": {}}
    for name in names:
        path = Path(pattern.replace("{element}", name))
        signal = _load_signal(path)
        data = np.asarray(signal.data)
        if data.ndim != 3:
            raise EdxtomoInputError(
                f"{path}: expected a stack of shape (n_tilt, ny, nx), got shape {data.shape}"
            )
        if data.shape[0] != angles.size:
            raise EdxtomoInputError(
                f"{path}: {data.shape[0]} images but {angles.size} tilt angles in "
                f"{angles_source}"
            )
        first = next(iter(channels.values()), None)
        if first is not None and first.shape != data.shape:
            raise EdxtomoInputError(
                f"{path}: shape {data.shape} differs from {names[0]}'s {first.shape}"
            )
        size = pixel_size_nm_of(list(signal.axes_manager.signal_axes), path)
        if size is not None:
            pixel_sizes[path] = size
        channels[name] = data
        provenance["channels"][name] = {
            "source_file": str(path),
            "counts": bool(np.issubdtype(data.dtype, np.integer)),
        }
    if pixel_size_nm is None:
        if not pixel_sizes:
            raise EdxtomoInputError(
                f"maps {pattern!r}: the files carry no pixel size; give pixel_size_nm"
            )
        reference = next(iter(pixel_sizes.values()))
        for path, size in pixel_sizes.items():
            if not np.isclose(size, reference, rtol=_PIXEL_SIZE_RTOL, atol=0):
                raise EdxtomoInputError(
                    f"{path}: pixel size {size:.6g} nm differs from {reference:.6g} nm"
                )
        pixel_size_nm = reference
    order = np.argsort(angles, kind="stable")
    provenance["angles_source"] = angles_source
    return TiltSeries(
        {name: data[order] for name, data in channels.items()},
        angles[order],
        float(pixel_size_nm),
        provenance,
    )
