"""Tomographic reconstruction: projector, SIRT, FBP and external backends.

The geometry convention (angle sign, centring, units) is documented in
:mod:`edxtomo.tomo.projector`; projection filters in :mod:`edxtomo.tomo.prefilter`.
"""

from edxtomo.tomo.device import resolve_device
from edxtomo.tomo.fbp import fbp
from edxtomo.tomo.prefilter import prefilter_projections
from edxtomo.tomo.projector import Projector, backproject, project, system_matrix
from edxtomo.tomo.sirt import sirt

__all__ = [
    "Projector",
    "backproject",
    "fbp",
    "prefilter_projections",
    "project",
    "resolve_device",
    "sirt",
    "system_matrix",
]
