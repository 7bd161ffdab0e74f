"""Data model and file formats shared by every stage.

- :mod:`~edxtomo.io.series`: :class:`TiltSeries`, the calibrated tilt series every stage
  passes on, and the channel and axis names.
- :mod:`~edxtomo.io.atomic`: :func:`atomic_path`, through which every writer goes, so a
  failure never leaves a partial file.
- :mod:`~edxtomo.io.stacks`: tilt series as calibrated ``.hspy`` stacks (they also open as
  ``etspy.TomoStack``), volumes as ImageJ TIFF and ``.hspy``, label volumes.
- :mod:`~edxtomo.io.raw`: raw vendor files (Velox ``.emd``, Bruker ``.bcf``, ...) read
  through rosettasciio: spectrum images and HAADF images, formats checked by content.
- :mod:`~edxtomo.io.header`: :func:`read_header`, the calibration of a raw file
  (:class:`Acquisition`) from its metadata alone, fast enough to run at planning time.
- :mod:`~edxtomo.io.angles`: the ``.rawtlt`` reader and :func:`check_angles`.
- :mod:`~edxtomo.io.maps`: the maps route, ready element stacks plus their angles.
- :mod:`~edxtomo.io.xray`: exspy's element database (read without exspy's models) and the
  detector's FWHM law.

The package imports numpy only; HyperSpy, rosettasciio and tifffile are imported by the
functions that need them. It imports nothing from the stages above it.
"""

from edxtomo.io.angles import check_angles, read_rawtlt
from edxtomo.io.atomic import atomic_path
from edxtomo.io.header import DEFAULT_RESOLUTION_MNKA_EV, Acquisition, read_header
from edxtomo.io.maps import load_maps_series
from edxtomo.io.raw import (
    EAGER_READ_MAX_BYTES,
    SPECTRUM_IMAGE_CHUNK,
    check_raw_file,
    pixel_size_nm_of,
    read_haadf,
    read_spectrum_image,
)
from edxtomo.io.series import FRAME_AXIS_NAME, HAADF, TILT_AXIS_NAME, TiltSeries
from edxtomo.io.stacks import (
    BACKGROUND_DIR,
    REPLICATE_FOLDER,
    load_tilt_series,
    read_stack,
    read_volume,
    read_volume_folder,
    replicate_folders,
    save_tilt_series,
    write_labels,
    write_stack,
    write_volume,
)

__all__ = [
    "BACKGROUND_DIR",
    "DEFAULT_RESOLUTION_MNKA_EV",
    "EAGER_READ_MAX_BYTES",
    "FRAME_AXIS_NAME",
    "HAADF",
    "REPLICATE_FOLDER",
    "SPECTRUM_IMAGE_CHUNK",
    "TILT_AXIS_NAME",
    "Acquisition",
    "TiltSeries",
    "atomic_path",
    "check_angles",
    "check_raw_file",
    "load_maps_series",
    "load_tilt_series",
    "pixel_size_nm_of",
    "read_haadf",
    "read_header",
    "read_rawtlt",
    "read_spectrum_image",
    "read_stack",
    "read_volume",
    "read_volume_folder",
    "replicate_folders",
    "save_tilt_series",
    "write_labels",
    "write_stack",
    "write_volume",
]
