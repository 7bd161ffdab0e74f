"""The demo idle and under sharing: two users running it at once on one workstation.

Clones the repository's committed state into fresh folders and runs the demo there with
``snakemake --cores 2``, as a user would (``PYTHONPATH`` points at each clone, so its own
code runs): first alone, then two clones at the same time. Prints the idle time with the
time of each job, the time of each shared run, and the ratio of the slower shared run to
the idle one (goal: at most 3; a fair share of the cores gives 2). The load average and
the share of CPU time the hypervisor gave to other virtual machines (steal, from
``/proc/stat``) are printed with every figure: the machine may be shared with other work,
inside it or beside it.

    python bench/load.py                 # idle, then two at once (about 15-20 minutes idle)
    python bench/load.py --idle-only     # the demo alone, with the time of each job
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_START = re.compile(r"^(?:local)?rule (\S+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")


def job_times(snakemake_log: Path) -> list[tuple[str, float]]:
    """``(rule[wildcards], seconds)`` of every finished job of a Snakemake log, in order.

    Snakemake stamps each job's start and end to the second.
    """
    stamp, pending, jobs, finished = None, None, {}, []
    for line in snakemake_log.read_text().splitlines():
        if match := _STAMP.match(line):
            stamp = datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y")
        elif match := _START.match(line):
            pending = [match[1], stamp]
        elif pending and (match := _JOBID.match(line)):
            jobs[match[1]] = pending
        elif pending and (match := _WILDCARDS.match(line)):
            values = [v.split("=", 1)[1] for v in match[1].split(", ")]
            pending[0] += f"[{','.join(values)}]"
        elif match := _FINISHED.match(line):
            name, start = jobs[match[1]]
            finished.append((name, (stamp - start).total_seconds()))
    return finished


def clone(workdir: Path, name: str, commit: str) -> Path:
    """A fresh clone of the repository at ``commit``."""
    target = workdir / name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    subprocess.run(["git", "checkout", "-q", commit], cwd=target, check=True)
    return target


def start_demo(folder: Path) -> subprocess.Popen:
    """``snakemake --cores 2`` in ``folder``, importing that folder's edxtomo."""
    env = dict(os.environ, PYTHONPATH=str(folder))
    with open(folder / "demo.out", "w") as out:
        return subprocess.Popen(["snakemake", "--cores", "2"], cwd=folder, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, folder: Path, started: float) -> float:
    """Wall time of a demo run; exits with its output's tail when it failed."""
    if process.wait() != 0:
        sys.exit(f"the demo failed in {folder}:\n"
                 + "\n".join((folder / "demo.out").read_text().splitlines()[-30:]))
    return time.perf_counter() - started


def cpu_ticks() -> tuple[int, int]:
    """``(all, stolen)`` CPU ticks since boot, from ``/proc/stat`` (``(0, 0)`` without it)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return sum(fields), fields[7]


def run_demos(folders: list[Path]) -> tuple[list[float], str]:
    """Run the demo in every folder at the same time: wall times, and the conditions
    (load average before / after, CPU time stolen by the hypervisor) as a table cell."""
    load_before, (total_before, stolen_before) = os.getloadavg()[0], cpu_ticks()
    started = time.perf_counter()
    processes = [start_demo(folder) for folder in folders]
    seconds = [finish(p, f, started) for p, f in zip(processes, folders, strict=True)]
    total, stolen = (a - b for a, b in zip(cpu_ticks(), (total_before, stolen_before),
                                           strict=True))
    steal = f"{100 * stolen / total:.1f}%" if total else "n/a"
    return seconds, f"{load_before:.2f} / {os.getloadavg()[0]:.2f} | {steal}"


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-only", action="store_true", help="run the demo alone only")
    parser.add_argument("--workdir", type=Path, help="where the clones go (default: a temp)")
    parser.add_argument("--commit", default="HEAD", help="the commit to run (default: HEAD)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="edxtomo-load-"))
    commit = _commit(args.commit)
    idle = clone(workdir, "idle", commit)
    (idle_seconds,), idle_conditions = run_demos([idle])
    print(f"clones in {workdir}, commit {commit[:10]}, {os.cpu_count()} CPUs\n")
    print("| job | seconds |\n|---|---|")
    for name, seconds in job_times(max((idle / ".snakemake/log").glob("*.snakemake.log"))):
        print(f"| {name} | {seconds:.0f} |")
    print("\n| run | wall time | load average before / after | CPU stolen |\n|---|---|---|---|")
    print(f"| demo alone (reference) | {minutes(idle_seconds)} | {idle_conditions} |",
          flush=True)
    if args.idle_only:
        return
    shared, conditions = run_demos([clone(workdir, f"user{k}", commit) for k in (1, 2)])
    for k, seconds in enumerate(shared, start=1):
        print(f"| demo beside a second demo, user {k} | {minutes(seconds)} | {conditions} |")
    print(f"\nratio shared / alone: {max(shared) / idle_seconds:.2f} (goal <= 3, fair share 2)")


def _commit(revision: str) -> str:
    return subprocess.run(["git", "rev-parse", revision], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
