"""Run-time set-up shared by the workflow's scripts: logging, thread limits, GPU presence.

Nothing here imports torch: a figure or table job must not pay for it, and Snakemake must
not import it to plan.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ERROR_MARKER = "edxtomo error: "
"""Prefix of the one line that a failed job writes last in its log: the project's message."""
THIRD_PARTY_NOISE = ("please report this error",)
"""Phrases of third-party log records that only add noise once the project names the cause."""
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
JOB_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Environment of every job (:func:`set_job_environment`): idle OpenMP threads (torch's)
sleep instead of spinning, so that a job's waiting threads do not take the cores of the jobs
beside it. Measured on 2 cores at load 9 to 11: a 2-thread convolution training step took
1.07 to 1.22 s with spinning threads, 0.37 to 0.44 s with PASSIVE, 0.42 to 0.44 s on 1
thread (``bench/README.md``, Workflow)."""


def nvidia_gpu_present() -> bool:
    """Whether this host has an NVIDIA GPU with its driver loaded (no torch, no CUDA init)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir())


def set_job_environment() -> None:
    """Give the jobs the workflow starts the :data:`JOB_ENVIRONMENT` (where not set).

    Called by the Snakefile; the jobs inherit it. It must be in place before a job loads
    OpenMP, which reads it once.
    """
    for name, value in JOB_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def thread_limits(threads: int) -> Iterator[None]:
    """Hold every thread pool of the job to ``threads``: BLAS/OpenMP, torch and numba (so
    parallel jobs do not oversubscribe the cores).

    Torch and numba are limited now when imported, else through ``OMP_NUM_THREADS`` (set by
    Snakemake) and ``NUMBA_NUM_THREADS`` (set here), which they read when imported.
    """
    from threadpoolctl import threadpool_limits

    threads = max(1, int(threads))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    saved = os.environ.get("NUMBA_NUM_THREADS")
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        if saved is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = saved


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
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        handler.addFilter(_drop_third_party_noise)
        logger = logging.getLogger("edxtomo.workflow")
        try:
            yield logger
        except Exception as exc:
            logger.exception("the job failed")
            message = _one_line(exc)
            logger.error("%s%s", ERROR_MARKER, message)
            # One line on the console; the traceback stays in the log.
            raise SystemExit(f"{ERROR_MARKER}{message} (details in {log_path})") from None
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
            sys.stderr.flush()


def _one_line(exc: Exception) -> str:
    from edxtomo.errors import EdxtomoInputError

    text = " ".join(str(exc).split())
    return text if isinstance(exc, EdxtomoInputError) else f"{type(exc).__name__}: {text}"


def _drop_third_party_noise(record: logging.LogRecord) -> bool:
    if record.name.startswith("edxtomo"):
        return True
    text = record.getMessage().lower()
    return not any(phrase in text for phrase in THIRD_PARTY_NOISE)


_JOB_BLOCK = r"(?P<body>(?:[ \t]+.*\n?)*)"
_STARTED_JOB = re.compile(r"^(?:local)?rule (?P<rule>\S+):\n" + _JOB_BLOCK, re.M)
_FAILED_JOB = re.compile(r"^Error in rule (?P<rule>\S+):\n" + _JOB_BLOCK, re.M)


def _field(body: str, name: str) -> str | None:
    match = re.search(rf"^\s*{name}: (\S.*)$", body, re.M)
    return match[1].strip() if match else None


def failed_job_lines(snakemake_log: str | os.PathLike | list) -> list[str]:
    """``rule (wildcards): message`` for every failed job of a Snakemake run.

    Parameters
    ----------
    snakemake_log : path-like or list of path-like
        The run's log (``.snakemake/log/*.snakemake.log``, Snakemake's ``log`` in
        ``onerror``). Each failed job's message is the :data:`ERROR_MARKER` line of its own
        log, or a pointer to that log.
    """
    paths = snakemake_log if isinstance(snakemake_log, list | tuple) else [snakemake_log]
    text = ""
    for path in paths:
        with contextlib.suppress(OSError):
            text += Path(path).read_text(errors="replace")
    wildcards = {_field(m["body"], "jobid"): _field(m["body"], "wildcards")
                 for m in _STARTED_JOB.finditer(text)}
    lines = []
    for match in _FAILED_JOB.finditer(text):
        body = match["body"]
        where = wildcards.get(_field(body, "jobid")) or _field(body, "wildcards")
        job_log = (_field(body, "log") or "").split(" ")[0].rstrip(",")
        message = (_marked_message(job_log) if job_log else None) or (
            f"see {job_log}" if job_log else "see the messages above")
        lines.append(f"{match['rule']}{f' ({where})' if where else ''}: {message}")
    return list(dict.fromkeys(lines))


def _marked_message(job_log: str) -> str | None:
    try:
        text = Path(job_log).read_text(errors="replace")
    except OSError:
        return None
    marked = [line.split(ERROR_MARKER, 1)[1] for line in text.splitlines() if ERROR_MARKER in line]
    return marked[-1].strip() if marked else None
