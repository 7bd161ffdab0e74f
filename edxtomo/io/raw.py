"""Raw acquisitions: spectrum images and HAADF images read through rosettasciio.

One file at a time: :func:`read_spectrum_image` gives the EDS spectrum image of a
Velox ``.emd``, Bruker ``.bcf`` or any format rosettasciio reads, :func:`read_haadf` its
HAADF image; :func:`~edxtomo.io.header.read_header` its calibration. :func:`check_raw_file`
checks the format by content before any reader sees the file. Every read error is an
:class:`~edxtomo.errors.EdxtomoInputError` that names the file.
"""

from __future__ import annotations

import os
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
#: Files whose spectrum images take at most this much dense (``Acquisition.dense_bytes``)
#: are read at once: the lazy reader compiles its sparse indexing just in time, about 5 s in
#: every extract job, where a demo-size file (64^2 px, 1024 channels, 4 detectors) reads in
#: 0.2 s.
EAGER_READ_MAX_BYTES = 256 * 2**20

#: Reader options per file extension. Velox: the spectrum image only, each EDS detector on
#: its own (the caller sums them), frames summed unless asked otherwise.
_SPECTRUM_IMAGE_OPTIONS: dict[str, dict[str, Any]] = {
    "emd": {"select_type": "spectrum_image", "sum_EDS_detectors": False},
    "bcf": {"select_type": "spectrum_image"},
}
_NO_SPECTRUM_IMAGE = (
    "{path}: no EDS spectrum image in the file (a Velox file saved as 'reduced data' keeps "
    "only its maps: extract maps in Velox and use the maps route instead)"
)
_HDF5 = ("HDF5", b"\x89HDF\r\n\x1a\n")
#: What the content of a file must begin with, per extension: (format, signature name,
#: signature). HDF5 may also start after a user block (h5py checks every allowed offset).
_SIGNATURES: dict[str, tuple[str, str, bytes]] = {
    "emd": ("Velox EMD file", *_HDF5),
    "hspy": ("HyperSpy file", *_HDF5),
    "hdf5": ("HyperSpy file", *_HDF5),
    "bcf": ("Bruker BCF file", "AAMVHFSS", b"AAMVHFSS"),
}
#: Beginnings of common files that end up renamed, named in the error message.
_LOOKS_LIKE = {b"\x89PNG": "a PNG image", b"II*\x00": "a TIFF image", b"MM\x00*": "a TIFF image",
               b"\xff\xd8\xff": "a JPEG image", b"PK\x03\x04": "a ZIP archive",
               b"%PDF": "a PDF document"}
_IMAGE_OPTIONS: dict[str, dict[str, Any]] = {
    "emd": {"select_type": "images", "load_SI_image_stack": True},
    "bcf": {"select_type": "image"},
}
_PIXEL_SIZE_RTOL = 1e-3


def _extension(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def check_raw_file(path: str | os.PathLike) -> Path:
    """Check that ``path`` exists, has an extension that rosettasciio reads, and that its
    content begins as that format does (HDF5 for ``.emd`` and ``.hspy``, ``AAMVHFSS`` for
    Bruker ``.bcf``).

    Raises
    ------
    EdxtomoInputError
        Missing file, a format no rosettasciio plugin declares, or content of another kind
        (a PNG image renamed ``.emd``).
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
    _check_signature(path)
    return path


def _check_signature(path: Path) -> None:
    """Raise when the file does not begin with the signature of its extension's format."""
    if _extension(path) not in _SIGNATURES:
        return
    what, name, signature = _SIGNATURES[_extension(path)]
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(signature) or (name == "HDF5" and _is_hdf5(path)):
        return
    kind = next((k for start, k in _LOOKS_LIKE.items() if head.startswith(start)), None)
    looks = f"; it looks like {kind}" if kind else ""
    raise EdxtomoInputError(f"{path}: not a {what} (no {name} signature{looks})")


def _is_hdf5(path: Path) -> bool:
    import h5py

    return bool(h5py.is_hdf5(path))


def _is_eds_spectrum_image(signal_type: str, n_signal_axes: int, n_navigation_axes: int) -> bool:
    """An EDS signal with one energy axis and at least two navigation axes (y, x)."""
    return signal_type.startswith("EDS") and n_signal_axes == 1 and n_navigation_axes >= 2


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


def read_spectrum_image(path: str | os.PathLike, *, keep_frames: bool = False,
                        lazy: bool = True) -> list:
    """Read the EDS spectrum image of one raw file, one signal per EDS detector.

    Velox files give one signal per detector (sum them: counts add); other formats give one.
    Read lazily, nothing dense is built here: Velox streams come as dask arrays over sparse
    arrays.

    Parameters
    ----------
    path : path-like
        A raw file that rosettasciio reads (Velox ``.emd``, Bruker ``.bcf``, ...).
    keep_frames : bool
        Keep the frames of a Velox acquisition as a leading navigation axis.
    lazy : bool
        False reads the dense arrays at once, for small files: the lazy Velox reader's
        sparse indexing is compiled just in time, about 5 s in every process that reads.

    Returns
    -------
    list of EDSSpectrum (LazyEDSSpectrum when ``lazy``)
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
        s for s in _load_raw(path, lazy=lazy, **options)
        if _is_eds_spectrum_image(str(s.metadata.get_item("Signal.signal_type", "")),
                                  s.axes_manager.signal_dimension,
                                  s.axes_manager.navigation_dimension)
    ]
    if not found:
        raise EdxtomoInputError(_NO_SPECTRUM_IMAGE.format(path=path))
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
    return _square_pixel_nm(sizes, source)


def _square_pixel_nm(sizes_nm: list[float | None], source: str | os.PathLike) -> float | None:
    """The pixel size from the sizes along two axes in nm (None: not a length).

    Raises
    ------
    EdxtomoInputError
        Pixels that are not square.
    """
    if any(size is None for size in sizes_nm):
        return None
    if not np.isclose(sizes_nm[0], sizes_nm[1], rtol=_PIXEL_SIZE_RTOL, atol=0):
        raise EdxtomoInputError(
            f"{source}: pixels are not square ({sizes_nm[0]:.6g} nm by {sizes_nm[1]:.6g} nm)"
        )
    return sizes_nm[0]

