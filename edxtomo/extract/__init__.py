"""The extract stage: spectrum images to element maps (X-ray lines, windows, background).

One raw file per tilt (Velox ``.emd``, Bruker ``.bcf`` or any EDS spectrum image that
rosettasciio reads) becomes one image per element of a :class:`~edxtomo.io.TiltSeries`:
the gross counts in each element's integration window plus a background model
(``method="windows"``), or net counts unmixed by an EDS-model fit (``method="model"``).

- :mod:`~edxtomo.extract.lines`: exspy's X-ray line table, integration windows and the
  default line of each element.
- :mod:`~edxtomo.extract.windows`: background windows and the plan of lines and windows
  (:class:`LineWindows`), keV windows as channel ranges.
- :mod:`~edxtomo.extract.reduction`: one spectrum image reduced to window counts per pixel
  and a summed spectrum, in O(counts) for sparse Velox streams.
- :mod:`~edxtomo.extract.tilts`: :func:`check_acquisitions` (the tilts were acquired alike)
  and :func:`order_tilts` (each file with its angle), pure functions over file headers.
- :mod:`~edxtomo.extract.presence`: the summed spectrum's peaks (:func:`find_peaks`), which
  background windows avoid, and each element's presence test (:func:`element_presence`).
- :mod:`~edxtomo.extract.background`: the background under each window, per tilt and pixel.
- :mod:`~edxtomo.extract.model`: the EDS-model fit and the unmixing of overlapping lines.
- :mod:`~edxtomo.extract.series`: :func:`extract_tilt_series`, the whole stage over the files.
- :mod:`~edxtomo.extract.sample`: :func:`extract_sample`, one row of the sample sheet (raw
  files or ready maps), and :func:`write_extracted`, the folder of the ``extract`` rule.
"""

from edxtomo.extract.background import background_maps, smooth_continuum, window_background
from edxtomo.extract.lines import (
    OVERLAP_WEIGHT,
    PREFERRED_MAX_KEV,
    PRINCIPAL_LINES,
    ZERO_PEAK_CUTOFF_KEV,
    choose_line,
    element_lines,
    integration_window_keV,
    line_energy_keV,
    overlapping_lines,
    usable_range_keV,
    xray_line_table,
)
from edxtomo.extract.model import (
    MODEL_BACKGROUND_ORDER,
    MODEL_MARGIN_KEV,
    ModelFit,
    fit_eds_model,
    unmix,
    unmixing_matrix,
)
from edxtomo.extract.presence import (
    PEAK_MIN_CONTINUUM_FRACTION,
    SIGNIFICANCE_SIGMA,
    ElementPresence,
    Peak,
    element_presence,
    find_peaks,
    identify_peaks,
    poisson_significance,
    top_hat,
)
from edxtomo.extract.reduction import reduce_spectrum_image
from edxtomo.extract.sample import extract_sample, raw_files, write_extracted
from edxtomo.extract.series import SummedSpectrum, extract_tilt_series
from edxtomo.extract.tilts import (
    ANGLE_TOLERANCE_DEG,
    check_acquisitions,
    natural_key,
    order_tilts,
)
from edxtomo.extract.windows import (
    BACKGROUND_LINE_WEIGHT,
    BACKGROUND_MIN_WIDTH_FWHM,
    BACKGROUND_REACH_FWHM,
    CONTINUUM_PIECE_FWHM,
    LINE_CLEARANCE_FWHM,
    LineWindows,
    auto_background_windows,
    avoid_peaks,
    channel_range,
    merge_ranges,
    plan_lines,
    split_ranges,
)
from edxtomo.io.xray import MN_KA_KEV, xray_fwhm_keV

__all__ = [
    "extract_sample",
    "raw_files",
    "write_extracted",
    "ANGLE_TOLERANCE_DEG",
    "CONTINUUM_PIECE_FWHM",
    "PEAK_MIN_CONTINUUM_FRACTION",
    "SIGNIFICANCE_SIGMA",
    "ElementPresence",
    "Peak",
    "avoid_peaks",
    "check_acquisitions",
    "element_presence",
    "find_peaks",
    "identify_peaks",
    "natural_key",
    "order_tilts",
    "poisson_significance",
    "split_ranges",
    "top_hat",
    "xray_line_table",
    "BACKGROUND_LINE_WEIGHT",
    "BACKGROUND_MIN_WIDTH_FWHM",
    "BACKGROUND_REACH_FWHM",
    "LINE_CLEARANCE_FWHM",
    "MN_KA_KEV",
    "MODEL_BACKGROUND_ORDER",
    "MODEL_MARGIN_KEV",
    "OVERLAP_WEIGHT",
    "PREFERRED_MAX_KEV",
    "PRINCIPAL_LINES",
    "ZERO_PEAK_CUTOFF_KEV",
    "LineWindows",
    "ModelFit",
    "SummedSpectrum",
    "auto_background_windows",
    "background_maps",
    "channel_range",
    "choose_line",
    "element_lines",
    "extract_tilt_series",
    "fit_eds_model",
    "integration_window_keV",
    "line_energy_keV",
    "merge_ranges",
    "overlapping_lines",
    "plan_lines",
    "reduce_spectrum_image",
    "smooth_continuum",
    "unmix",
    "unmixing_matrix",
    "usable_range_keV",
    "window_background",
    "xray_fwhm_keV",
]
