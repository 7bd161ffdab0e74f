"""Run-time set-up of the jobs: one-line errors, the failed-job summary, thread limits."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from edxtomo.errors import EdxtomoInputError
from edxtomo.runtime import (
    ERROR_MARKER,
    failed_job_lines,
    rule_context,
    set_job_environment,
    thread_limits,
)


def test_a_failed_job_says_one_line_and_keeps_the_traceback_in_its_log(tmp_path):
    log_path = tmp_path / "job.log"
    with pytest.raises(SystemExit) as stop, rule_context(log_path):
        logging.getLogger("rsciio.emd").error("Please report this error to the developers")
        raise EdxtomoInputError("data/t1.emd: no EDS spectrum image in the file")
    assert str(stop.value) == (f"{ERROR_MARKER}data/t1.emd: no EDS spectrum image in the file "
                               f"(details in {log_path})")
    text = log_path.read_text()
    assert "Traceback" in text and "please report" not in text.lower()
    assert text.splitlines()[-1].endswith(
        f"{ERROR_MARKER}data/t1.emd: no EDS spectrum image in the file")


def test_a_bug_is_named_by_its_type(tmp_path):
    with pytest.raises(SystemExit, match=r"edxtomo error: ZeroDivisionError: division by zero"):
        with rule_context(tmp_path / "job.log"):
            1 / 0  # noqa: B018


def test_failed_job_lines_give_rule_wildcards_and_message(tmp_path):
    job_log = tmp_path / "logs" / "extract" / "a.log"
    job_log.parent.mkdir(parents=True)
    job_log.write_text(f"... traceback ...\nERROR edxtomo.workflow: {ERROR_MARKER}t2.emd: "
                       "beam energy 10 kV differs from 300 kV of t1.emd\n")
    run_log = tmp_path / "run.log"
    run_log.write_text(
        "[Sat Nov 28 03:39:18 2026]\nError in rule extract:\n    message: None\n    jobid: 2\n"
        "    input: data\n    output: results/a/extracted\n"
        f"    log: {job_log} (check log file(s) for error details)\n"
        "    wildcards: sample=a\n"
        "Error in rule align:\n    jobid: 3\n    log: missing.log (check log file(s))\n"
        "Shutting down, this might take some time.\n")
    assert failed_job_lines([run_log]) == [
        "extract (sample=a): t2.emd: beam energy 10 kV differs from 300 kV of t1.emd",
        "align: see missing.log",
    ]


def test_thread_limits_hold_blas_to_the_job_threads():
    from threadpoolctl import threadpool_info

    with thread_limits(1):
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())


def test_thread_limits_hold_numba_imported_inside_the_job():
    # numba reads NUMBA_NUM_THREADS once, when imported: a job that imports it (through
    # rosettasciio) after entering its limits must still get the job's threads.
    script = (
        "import os\n"
        "from edxtomo.runtime import thread_limits\n"
        "with thread_limits(1):\n"
        "    import numba\n"
        "    print(numba.config.NUMBA_NUM_THREADS, numba.get_num_threads())\n"
        "print(os.environ.get('NUMBA_NUM_THREADS', 'unset'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["1", "1", "unset"]


def test_set_job_environment_keeps_a_users_setting(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    set_job_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    set_job_environment()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
