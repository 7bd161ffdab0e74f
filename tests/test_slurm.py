"""A real SLURM run: a one-node cluster on localhost runs a small workflow through profiles/slurm.

The fixture starts munged, slurmctld and slurmd with a slurm.conf in a temporary folder (no file
under /etc is touched); `.ci/run` installs Debian's slurm-wlm and munge for it. Without a slurmdbd,
`sacct` has no accounting database, so the scheduler's evidence comes from the job-completion log
(`JobCompType=jobcomp/filetxt`) read through `sacct --completion`, and the plugin queries the job
states with squeue (MinJobAge keeps finished jobs listed).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "sacct", "srun")
RULES = ("simulate", "extract", "align", "reconstruct")


def _sbin_which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def _install_slurm() -> str | None:
    """Installs slurm-wlm and munge with apt as .ci/run does; returns why not, or None."""
    if shutil.which("apt-get") is None:
        return "slurm-wlm and munge are not installed and there is no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                     "slurm-wlm", "munge"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-1500:]
            return f"could not install slurm-wlm and munge: {output}"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(absent)"


class Cluster:
    """A single-node SLURM cluster in `root`; `env` points the client commands at it."""

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.processes: list[subprocess.Popen] = []
        # snakemake-executor-plugin-slurm-jobstep drops every SLURM_* variable but the job's
        # identity before its nested `srun`, SLURM_CONF included, so srun inside a job would read
        # /etc/slurm/slurm.conf. A shim first on PATH gives it this cluster's configuration.
        bin_dir = root / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "srun"
        shim.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_sbin_which("srun")} "$@"\n')
        shim.chmod(0o755)
        self.env = {**os.environ, "SLURM_CONF": str(self.conf),
                    "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def logs(self) -> str:
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out",
                     "munged.out"):
            parts.append(f"--- {name} ---\n{_tail(self.root / 'log' / name)}")
        return "\n".join(parts)

    def run(self, *command: str, timeout: int = 60) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, env=self.env,
                              timeout=timeout)

    def _spawn(self, name: str, *command: str) -> None:
        out = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 (kept for the daemon)
        self.processes.append(subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True))
        out.close()

    def start(self) -> None:
        root = self.root
        for sub in ("munge", "run", "log", "state", "spool"):
            (root / sub).mkdir()
        (root / "munge").chmod(0o700)      # munged wants its key private ...
        (root / "run").chmod(0o755)        # ... and its socket reachable by everyone
        key = root / "munge" / "munge.key"
        subprocess.run([_sbin_which("mungekey"), "--create", f"--keyfile={key}"], check=True,
                       capture_output=True)
        socket_path = root / "run" / "munge.socket"
        self._spawn("munged", _sbin_which("munged"), "--foreground", f"--key-file={key}",
                    f"--socket={socket_path}", f"--pid-file={root / 'run' / 'munged.pid'}",
                    f"--log-file={root / 'log' / 'munged.log'}",
                    f"--seed-file={root / 'munge' / 'munged.seed'}")
        self._wait(lambda: socket_path.exists(), 20, "munged did not create its socket")

        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        cpus = os.cpu_count() or 1
        self.conf.write_text(f"""\
ClusterName=edxtomo
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={socket_path}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}
SlurmdPidFile={root / 'run' / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root / 'log' / 'jobcomp.log'}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=3600
ReturnToService=2
MpiDefault=none
GresTypes=gpu
# The node as slurm.conf says, not as probed: memory at least what profiles/slurm asks of one
# job (32 GB for the deep reconstruction), at least 2 CPUs (threads: 2 rules), and one GPU
# (File=/dev/null), so that `sbatch --test-only` can judge the GPU request. Nothing enforces
# memory here (no cgroups), and no job runs on the GPU.
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={max(cpus, 2)} \
RealMemory={max(memory_mb, 32768)} Gres=gpu:1 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        (root / "gres.conf").write_text(f"NodeName={self.node} Name=gpu File=/dev/null Count=1\n")
        self._spawn("slurmctld", _sbin_which("slurmctld"), "-D", "-i")
        self._spawn("slurmd", _sbin_which("slurmd"), "-D", "-N", self.node)

        def node_idle() -> bool:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
            result = self.run("sinfo", "--noheader", "--Node", "--format=%T", timeout=20)
            return result.returncode == 0 and result.stdout.strip() == "idle"

        self._wait(node_idle, 90, "the node did not become idle in sinfo")

    def _wait(self, ready, seconds: float, message: str) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if ready():
                    return
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                pytest.fail(f"SLURM test cluster: {error}\n{self.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"SLURM test cluster: {message}\n{self.logs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.conf.exists():
            try:
                self.run("scancel", "--full", "--user=root", timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=15)


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("the SLURM test starts munged, slurmctld and slurmd: it needs root")
    pytest.importorskip("snakemake_executor_plugin_slurm",
                        reason="snakemake-executor-plugin-slurm is not installed")
    if any(_sbin_which(name) is None for name in DAEMONS):
        why = _install_slurm()
        if why:
            pytest.skip(why)
    missing = [name for name in DAEMONS if _sbin_which(name) is None]
    if missing:
        pytest.skip(f"not installed after apt-get install slurm-wlm munge: {missing}")
    root = Path(tempfile.mkdtemp(prefix="edxtomo-slurm-", dir="/tmp"))
    root.chmod(0o755)   # munged refuses a socket below a folder that not all can search
    cluster = Cluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _small_workdir(path: Path) -> Path:
    """The test configuration with a smaller demo specimen (48 px, 9 tilts) and SIRT only."""
    shutil.copytree(REPO_ROOT / ".test" / "config", path / "config")
    shutil.copytree(REPO_ROOT / "resources" / "specimens", path / "resources" / "specimens")
    preset_path = path / "resources" / "specimens" / "qd_demo.yaml"
    preset = yaml.safe_load(preset_path.read_text())
    preset.update(n_tilts=9, image_shape_px=[48, 48], volume_depth_px=48, supersample=2)
    preset["specimen"]["count"] = 2
    preset_path.write_text(yaml.safe_dump(preset))
    return path


def _snakemake(env: dict, workdir: Path, *args: str, timeout: int = 900):
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"),
               "--directory", str(workdir), "--profile", str(REPO_ROOT / "profiles" / "slurm"),
               "--jobs", "2", "--slurm-no-account", "--slurm-status-command", "squeue",
               "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs",
               *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=workdir)


SIRT = "results/demo_qd/recon/sirt"


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    """simulate -> extract -> align -> reconstruct (SIRT) submitted through profiles/slurm."""
    workdir = _small_workdir(tmp_path_factory.mktemp("slurm_run"))
    result = _snakemake(slurm_cluster.env, workdir, SIRT)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:] + slurm_cluster.logs()
    return workdir


def test_slurm_profile_runs_jobs_through_the_scheduler(slurm_cluster, slurm_run):
    workdir = slurm_run
    for output in ("resources/demo/demo_qd", "results/demo_qd/extracted",
                   "results/demo_qd/aligned", SIRT):
        assert (workdir / output).is_dir() and any((workdir / output).iterdir()), output

    # The plugin's per-job logs name the rule and the SLURM job id:
    # .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log
    logs = workdir / ".snakemake" / "slurm_logs"
    rule_of_job = {log.stem: log.relative_to(logs).parts[0] for log in logs.rglob("*.log")}
    assert sorted(rule_of_job.values()) == sorted(f"rule_{rule}" for rule in RULES), rule_of_job

    # No slurmdbd: sacct reads the job-completion log that slurmctld wrote.
    sacct = slurm_cluster.run("sacct", "--completion", "--parsable2", "--noheader",
                              "--format=JobID,JobName,State,Partition")
    assert sacct.returncode == 0, sacct.stderr
    states = {}
    for line in sacct.stdout.splitlines():
        job_id, _name, state, partition = line.split("|")
        states[job_id] = (state, partition)
    for job_id, rule in rule_of_job.items():
        assert states.get(job_id) == ("COMPLETED", "test"), (rule, job_id, sacct.stdout)


def test_slurm_gpu_requests_are_valid(slurm_cluster, slurm_run, tmp_path):
    """The GPU rules' gpu=1 becomes --gpus=1, which slurmctld accepts (sbatch --test-only).

    Their jobs must not run on this GPU-less node: an sbatch first on PATH records the
    plugin's call, has slurmctld judge it with --test-only (nothing is queued), and refuses
    the submission. The denoise job is judged first; then it runs here, without the
    profile and with two training steps, so that the deep job is the next to submit.
    """
    shim_dir = tmp_path / "shim"
    shim_dir.mkdir()
    record, verdict = tmp_path / "sbatch_args", tmp_path / "sbatch_test_only"
    (shim_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > {record}\n"
        f"{_sbin_which('sbatch')} --test-only \"$@\" > {verdict} 2>&1\n"
        f"echo \"exit $?\" >> {verdict}\n"
        "echo 'sbatch: error: refused by the test shim' >&2\nexit 1\n")
    (shim_dir / "sbatch").chmod(0o755)
    env = {**slurm_cluster.env, "PATH": f"{shim_dir}:{slurm_cluster.env['PATH']}"}
    # With the self-check on, tv (whose weights it reuses) and the self-check's denoise job
    # would come before the deep job.
    config = yaml.safe_load((slurm_run / "config" / "config.yaml").read_text())
    config["reconstruct"]["deep"]["selfcheck"] = False
    config["reconstruct"]["deep"].setdefault("denoise", {})["steps"] = 2
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    def assert_judged_and_refused(rule: str, target: str) -> None:
        result = _snakemake(env, slurm_run, target, "--configfile", str(config_path),
                            timeout=300)
        output = (result.stdout + result.stderr)[-4000:]
        assert result.returncode != 0, output   # the shim refused the submission
        call = " ".join(record.read_text().splitlines())
        assert "--gpus=1" in call and f"rule_{rule}" in call, call
        text = verdict.read_text()
        assert "to start at" in text and "exit 0" in text, text + call

    assert_judged_and_refused("denoise", "results/demo_qd/denoised/full")
    local = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/demo_qd/denoised/full", "--snakefile",
         str(REPO_ROOT / "Snakefile"), "--directory", str(slurm_run), "--cores", "2",
         "--configfile", str(config_path)], capture_output=True, text=True, timeout=300,
        cwd=slurm_run)
    assert local.returncode == 0, (local.stdout + local.stderr)[-4000:]
    assert_judged_and_refused("reconstruct_deep", "results/demo_qd/recon/deep")
