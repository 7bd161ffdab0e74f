"""Run-time set-up shared by the workflow's scripts: logging and thread limits."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def rule_context(log_path: str | os.PathLike, threads: int = 1) -> Iterator[logging.Logger]:
    """Route logging and stderr (tqdm progress bars) of a rule's script to its log file.

    Also limits PyTorch to the rule's ``threads``, so that parallel jobs do not
    oversubscribe the cores. Exceptions are logged with their traceback and re-raised, so
    that Snakemake marks the job failed and removes its outputs.

    Parameters
    ----------
    log_path : path-like
        The rule's ``log:`` file.
    threads : int
        The rule's ``threads:``.
    """
    import torch

    torch.set_num_threads(max(1, int(threads)))
    with open(log_path, "w", buffering=1) as stream, contextlib.redirect_stderr(stream):
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
