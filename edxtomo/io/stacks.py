"""Stack and volume files: tilt series as ``.hspy`` stacks, volumes as TIFF and ``.hspy``.

On disk every stack is a HyperSpy ``.hspy`` file with calibrated axes (tilt in degrees,
y and x in nm) and the angles in ``metadata.Tomography.tilts`` (the layout that
``etspy.load`` reads), so it also opens as an ``etspy.TomoStack``. Volumes of shape
``(nz, ny, nx)`` are written as ImageJ TIFF with the voxel size in nm (Fiji, napari and
Tomviz read it) and as ``.hspy`` beside it. Every writer goes through
:func:`~edxtomo.io.atomic.atomic_path`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError
from edxtomo.io.atomic import atomic_path
from edxtomo.io.raw import _load_signal
from edxtomo.io.series import FRAME_AXIS_NAME, HAADF, TILT_AXIS_NAME, TiltSeries


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


REPLICATE_FOLDER = "replicate_{k}"
"""Folder of count-split replicate ``k`` (a reconstruction folder) in a replicates folder."""


def replicate_folders(directory: str | os.PathLike) -> list[Path]:
    """The :data:`REPLICATE_FOLDER` folders of a replicates folder, in order of ``k``.

    Raises
    ------
    EdxtomoInputError
        Fewer than 2 replicates: no interval can be estimated from them.
    """
    folders = sorted(Path(directory).glob(REPLICATE_FOLDER.format(k="*")),
                     key=lambda p: int(p.name.rpartition("_")[2]))
    if len(folders) < 2:
        raise EdxtomoInputError(f"{directory}: need at least 2 replicate_* folders, "
                                f"found {len(folders)}")
    return folders


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
