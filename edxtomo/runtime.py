"""Run-time set-up shared by the workflow's scripts: logging, thread limits, GPU presence.

Nothing here imports torch: a figure or table job must not pay for it, and Snakemake must
not import it to plan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def nvidia_gpu_present() -> bool:
    """Whether this host has an NVIDIA GPU with its driver loaded (no torch, no CUDA init)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir())


@contextlib.contextmanager
def thread_limits(threads: int) -> Iterator[None]:
    """Hold every thread pool of the job to ``threads``: BLAS/OpenMP, and torch and numba
    when the job has imported them (so parallel jobs do not oversubscribe the cores)."""
    from threadpoolctl import threadpool_limits

    threads = max(1, int(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(limits=threads):
        yield


@contextlib.contextmanager
def rule_context(log_path: str | os.PathLike, threads: int = 1) -> Iterator[logging.Logger]:
    """Route logging and stderr (tqdm progress bars) of a rule's script to its log file.

    Also holds the job to its ``threads`` (:func:`thread_limits`). Exceptions are logged
    with their traceback and re-raised, so that Snakemake marks the job failed and removes
    its outputs.

    Parameters
    ----------
    log_path : path-like
        The rule's ``log:`` file.
    threads : int
        The rule's ``threads:``.
    """
    with (open(log_path, "w", buffering=1) as stream, contextlib.redirect_stderr(stream),
          thread_limits(threads)):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        logger = logging.getLogger("edxtomo.workflow")
        try:
            yield logger
        except Exception:
            logger.exception("the job failed")
            raise
        finally:
            root.removeHandler(handler)
            sys.stderr.flush()
