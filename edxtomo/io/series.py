"""The data model shared by every stage: :class:`TiltSeries` and its channel names.

A tilt series is a set of channels (``"HAADF"`` and one per element symbol), each a stack
of shape ``(n_tilt, ny, nx)``, or ``(n_tilt, n_frame, ny, nx)`` when frames are kept, with
the tilt angles in degrees and the pixel size in nm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edxtomo.errors import EdxtomoInputError

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
