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

log = logging.getLogger(__name__)

HAADF = "HAADF"
TILT_AXIS_NAME = "Projections"
FRAME_AXIS_NAME = "Frames"


class EdxtomoInputError(ValueError):
    """Bad input data: the message names the file and what is wrong with it."""


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
    """HyperSpy axis dictionary for the tilt axis: uniform when the steps are equal."""
    angles_deg = np.asarray(angles_deg, dtype=float)
    steps = np.diff(angles_deg)
    if angles_deg.size > 1 and np.allclose(steps, steps[0], rtol=0, atol=1e-6):
        return {
            "name": TILT_AXIS_NAME,
            "units": "degrees",
            "size": angles_deg.size,
            "offset": float(angles_deg[0]),
            "scale": float(steps[0]),
            "navigate": True,
        }
    return {"name": TILT_AXIS_NAME, "units": "degrees", "axis": angles_deg, "navigate": True}


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
    signal = hs.signals.Signal2D(data, axes=axes, metadata=metadata)
    with atomic_path(path) as tmp:
        signal.save(tmp, overwrite=True)


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
    with atomic_path(hspy_path) as tmp:
        signal.save(tmp, overwrite=True)
    return tif_path, hspy_path


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
