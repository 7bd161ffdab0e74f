"""Device selection and memory budgets for the reconstruction engine."""

from __future__ import annotations

import functools
import logging
import os

import torch

from edxtomo.errors import EdxtomoInputError

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn a device name into a :class:`torch.device`.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda"} or torch.device
        ``"auto"`` picks CUDA when a GPU is visible and otherwise falls back to the CPU with
        a logged warning. ``"cuda"`` (or ``"cuda:N"``) without a GPU is an error.

    Returns
    -------
    torch.device

    Raises
    ------
    EdxtomoInputError
        For an unknown name, or a CUDA device that does not exist.
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = str(device).strip().lower()
    kind = name.split(":", 1)[0]
    if kind not in DEVICES:
        raise EdxtomoInputError(f"unknown device {device!r}; expected one of {DEVICES}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        _warn_cpu_fallback()
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise EdxtomoInputError(
                f"device {device!r} requested but no CUDA GPU is visible to PyTorch "
                "(use device 'auto' or 'cpu')"
            )
        resolved = torch.device(name)
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise EdxtomoInputError(
                f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return resolved
    return torch.device("cpu")


@functools.cache
def _warn_cpu_fallback() -> None:
    # Once per process: projectors are built many times inside training loops.
    log.warning("device 'auto': no CUDA GPU visible, running on the CPU")


def available_bytes(device: torch.device) -> int:
    """Memory free for new arrays on ``device`` (host RAM for the CPU), in bytes."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        import psutil
    except ImportError:  # free pages only: an underestimate that ignores reclaimable cache
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return int(psutil.virtual_memory().available)
