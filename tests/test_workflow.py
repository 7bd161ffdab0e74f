"""Workflow tests: dry runs, lint, and the bad-configuration stops, through real Snakemake."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT

from edxtomo import io
from edxtomo.compare import COMPARISON_COLUMNS
from edxtomo.options import load_workflow_config
from edxtomo.simulate import load_preset, simulate_acquisition
from edxtomo.tomo.weights import read_chosen_weights

pytestmark = pytest.mark.workflow


def snakemake(*args: str, cwd: Path = REPO_ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the Snakemake CLI of this interpreter; returns the completed process."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"),
               "--directory", str(cwd), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def fresh_workdir(path: Path) -> Path:
    """A working directory with the test configuration (.test/config) and the presets."""
    shutil.copytree(REPO_ROOT / ".test" / "config", path / "config")
    shutil.copytree(REPO_ROOT / "resources" / "specimens", path / "resources" / "specimens")
    return path


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run (empty: nothing to do)."""
    assert result.returncode == 0, result.stderr + result.stdout
    lines = (result.stdout + result.stderr).splitlines()
    if not any(line.startswith("Job stats:") for line in lines):
        return {}
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:")) + 3
    jobs = {}
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    return jobs


def with_changed_option(workdir: Path, section: list[str], key: str, value) -> Path:
    """A copy of the test configuration with one option changed, as a --configfile."""
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    node = config
    for name in section:
        node = node.setdefault(name, {})
    node[key] = value
    path = workdir / f"changed_{key}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_dry_run_plans_the_demo(tmp_path):
    result = snakemake("-n", "--cores", "2", cwd=fresh_workdir(tmp_path))
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout
    for rule in ("simulate", "extract", "align", "reconstruct", "denoise", "reconstruct_deep",
                 "analyze", "tables", "figure_slices", "figure_thickness",
                 "figure_distributions", "figure_selfcheck", "figure_haadf_model"):
        assert f"rule {rule}:" in plan or f" {rule} " in plan, f"{rule} missing from the plan"


def test_dry_run_with_slurm_profile(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    result = snakemake("-n", "--profile", str(REPO_ROOT / "profiles" / "slurm"),
                       cwd=fresh_workdir(tmp_path))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "reconstruct_deep" in result.stdout


def test_planning_does_not_import_torch(tmp_path):
    """Snakemake plans the demo with a torch that cannot be imported."""
    poisoned = tmp_path / "poisoned"
    (poisoned / "torch").mkdir(parents=True)
    (poisoned / "torch" / "__init__.py").write_text("raise ImportError('torch at planning')\n")
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"),
               "--directory", str(fresh_workdir(tmp_path / "work")), "-n", "--cores", "2"]
    env = {**os.environ, "PYTHONPATH": str(poisoned)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reconstruct_deep" in result.stdout


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_config_stops_before_any_job(tmp_path):
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    config["reconstruct"]["sirt"] = {"iterations": "many"}
    config["samples"] = str(REPO_ROOT / "config" / "samples.tsv")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(tmp_path / "bad.yaml"), cwd=tmp_path)
    assert result.returncode != 0
    assert "reconstruct.sirt.iterations" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


def test_sample_row_pointing_at_no_file_stops_the_run(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample\traw\nmine\tdata/*.emd\n")
    config = {"samples": str(sheet)}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(tmp_path / "config.yaml"), cwd=tmp_path)
    assert result.returncode != 0
    assert "sample 'mine'" in result.stderr + result.stdout
    assert "matches no file" in result.stderr + result.stdout


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo workflow, run for real end to end in a fresh working directory."""
    workdir = fresh_workdir(tmp_path_factory.mktemp("demo"))
    result = snakemake("--cores", "2", cwd=workdir, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir


@pytest.mark.slow
def test_finished_run_plans_nothing(demo_run):
    assert planned_jobs(snakemake("-n", "--cores", "2", cwd=demo_run)) == {}


@pytest.mark.slow
def test_changed_deep_option_replans_only_the_deep_branch(demo_run):
    changed = with_changed_option(demo_run, ["reconstruct", "deep", "enrich"], "steps", 61)
    jobs = planned_jobs(snakemake("-n", "--cores", "2", "--configfile", str(changed),
                                  cwd=demo_run))
    assert jobs.get("reconstruct_deep") == 1
    # step a reads none of the enrichment's options: its job stays done
    assert set(jobs) <= {"reconstruct_deep", "analyze", "figure_slices", "figure_thickness",
                         "figure_segmentation", "figure_selfcheck", "figure_weights", "tables",
                         "figure_distributions", "all"}
    # Only the deep volume's own analysis and figures follow it.
    assert jobs["analyze"] == 1 and jobs["figure_slices"] == 1
    assert jobs.get("figure_weights", 0) <= 1


@pytest.mark.slow
def test_changed_sirt_option_does_not_touch_deep(demo_run):
    changed = with_changed_option(demo_run, ["reconstruct", "sirt"], "iterations", 51)
    jobs = planned_jobs(snakemake("-n", "--cores", "2", "--configfile", str(changed),
                                  cwd=demo_run))
    assert jobs.get("reconstruct") == 1
    assert not {"denoise", "reconstruct_deep", "align", "extract"} & set(jobs)


@pytest.mark.slow
def test_demo_runs_end_to_end(demo_run):
    config = load_workflow_config(yaml.safe_load(
        (REPO_ROOT / ".test" / "config" / "config.yaml").read_text()))
    methods = config.reconstruct.methods
    sample = demo_run / "results" / "demo_qd"
    truth = demo_run / "resources" / "demo" / "demo_qd" / "truth"
    n_tilts = yaml.safe_load((REPO_ROOT / "resources/specimens/qd_demo.yaml").read_text())[
        "n_tilts"]
    assert len(list((demo_run / "resources/demo/demo_qd").glob("tilt_*.emd"))) == n_tilts

    extracted = io.load_tilt_series(sample / "extracted")
    assert extracted.n_tilt == n_tilts and "HAADF" in extracted.channels
    assert set(extracted.elements) == {"In", "P", "Se", "S", "Zn"}
    transforms = pd.read_csv(sample / "aligned" / "transforms.tsv", sep="\t")
    drift = pd.read_csv(truth / "drift.tsv", sep="\t")
    # The demo's axis rotation is recovered to the 0.5 degree.
    assert abs(transforms["axis_rotation_deg"].iloc[0] - drift["axis_rotation_deg"].iloc[0]) < 0.5

    true_volume, voxel_size_nm = io.read_volume(truth / "Zn.tif")
    for method in methods:
        volumes, recon_voxel_nm = io.read_volume_folder(sample / "recon" / method)
        assert set(volumes) == set(extracted.channels)
        assert recon_voxel_nm == pytest.approx(voxel_size_nm)
        assert volumes["Zn"].shape == true_volume.shape
        # Every method puts the zinc where the truth has it (same geometry and orientation).
        assert np.corrcoef(volumes["Zn"].ravel(), true_volume.ravel())[0, 1] > 0.3, method
        assert (demo_run / "results/figures/demo_qd" / f"slices_{method}.png").stat().st_size

    particles = pd.read_csv(demo_run / "results/tables/particles.tsv", sep="\t")
    n_true = len(json.loads((truth / "particles.json").read_text())["particles"])
    for method in config.analyze.methods:
        rows = particles[particles["method"] == method]
        assert rows["particle"].nunique() == n_true, method
        assert set(rows["element"]) == {"In", "P", "Se", "S", "Zn"}
    summary = pd.read_csv(demo_run / "results/tables/samples.tsv", sep="\t")
    assert set(summary["method"]) == set(config.analyze.methods)
    assert {"mean_ci95_low_thickness_mean_nm", "mean_ci95_high_thickness_mean_nm",
            "interval_flag"} <= set(summary.columns)
    comparisons = pd.read_csv(demo_run / "results/tables/comparisons.tsv", sep="\t")
    # One demo sample: the comparison table has its columns and no rows.
    assert list(comparisons.columns) == list(COMPARISON_COLUMNS) and comparisons.empty
    # The deep job checked itself against tv on held-out counts, element by element.
    selfcheck = pd.read_csv(sample / "recon" / "deep" / "selfcheck.tsv", sep="\t")
    assert set(selfcheck["element"]) == {"In", "P", "Se", "S", "Zn"}
    assert np.isfinite(selfcheck[["deep_deviance", "tv_deviance"]].to_numpy()).all()
    for figure in ("spectrum", "alignment", "selfcheck", "haadf_model"):
        assert (demo_run / f"results/figures/demo_qd/{figure}.png").stat().st_size > 10_000
    # fused took the TV weights that the tv job chose from count halves (its own KL term's)
    chosen = read_chosen_weights(sample / "recon" / "tv" / "weights.tsv")
    log_text = (demo_run / "logs" / "reconstruct" / "demo_qd_fused.log").read_text()
    used = ast.literal_eval(log_text.split("fused TV weights ", 1)[1].splitlines()[0])
    assert set(used) == set(extracted.elements)
    assert used == pytest.approx({e: chosen[e] for e in used}, abs=1e-4)
    assert (demo_run / "results/figures/thickness_distributions.png").exists()


@pytest.mark.slow
def test_demo_report_builds(demo_run):
    result = snakemake("--cores", "1", "--report", "report.html", cwd=demo_run)
    assert result.returncode == 0, result.stderr[-3000:]
    html = (demo_run / "report.html").read_text(errors="replace")
    assert "Shell thickness" in html and "Reconstructions" in html


def _readme_block(language: str) -> str:
    """The first ``language`` code block of the README's "Your own data" section."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Your own data", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block in the README's 'Your own data'"
    return textwrap.dedent(match.group(1))


def _microscope_named_series(folder: Path) -> list[Path]:
    """The demo specimen as Velox files named the way an acquisition names them: numbered
    in a dose-symmetric acquisition order (0, +10, -10, ... deg), so that neither the
    alphabetical nor the natural order of the names is the order of the angles."""
    spec = load_preset(REPO_ROOT / "resources/specimens/qd_demo.yaml")
    files = simulate_acquisition(spec, folder / "simulated", seed=3)
    n = len(files)
    by_acquisition = sorted(range(n), key=lambda i: (abs(i - n // 2), i < n // 2))
    named = []
    for number, index in enumerate(by_acquisition, start=1):
        target = folder / f"SI {number} HAADF DF4.emd"
        files[index].rename(target)
        named.append(target)
    shutil.rmtree(folder / "simulated")
    return named


@pytest.mark.slow
def test_readme_recipe_for_your_own_data(tmp_path):
    """The README's three steps, as written, in a clone that also holds the demo's config."""
    clone = tmp_path / "clone"
    shutil.copytree(REPO_ROOT / "config", clone / "config")  # the demo config is there
    shutil.copytree(REPO_ROOT / "resources/specimens", clone / "resources/specimens")
    sheet = _readme_block("tsv")
    pattern = sheet.splitlines()[1].split("\t")[1]
    data_folder = (clone / pattern).parent
    data_folder.mkdir(parents=True)
    _microscope_named_series(data_folder)
    (clone / "my_samples.tsv").write_text(sheet)
    # As written, plus only this: the classical methods, to stay within the test budget.
    config = yaml.safe_load(_readme_block("yaml")) | {
        "reconstruct": {"methods": ["sirt"]}, "analyze": {"methods": ["sirt"]}}
    (clone / "my.yaml").write_text(yaml.safe_dump(config))
    command = _readme_block("bash").split()
    assert command[:2] == ["snakemake", "--cores"] and "--configfile" in command
    result = snakemake(*command[1:], cwd=clone, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # The demo's settings did not leak in: nothing simulated, rays from the particle centroid.
    assert not (clone / "resources/demo").exists()
    rows = pd.read_csv(clone / "results/batchA/analysis/sirt/thickness.tsv", sep="\t")
    assert set(rows["center"]) == {"particle"}
    extracted = io.load_tilt_series(clone / "results/batchA/extracted")
    np.testing.assert_allclose(extracted.angles_deg, np.linspace(-60, 60, 13), atol=1e-6)


def test_failed_run_ends_with_one_line_per_failed_job(tmp_path):
    workdir = fresh_workdir(tmp_path)
    preset = yaml.safe_load((REPO_ROOT / "resources/specimens/qd_demo.yaml").read_text())
    (workdir / "bad_preset.yaml").write_text(yaml.safe_dump(preset | {"n_tilt": 13}))
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    config["simulate"]["demo_qd"]["preset"] = "bad_preset.yaml"
    (workdir / "config/config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("--cores", "1", cwd=workdir)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    summary = output.rsplit("Exiting because a job execution failed", 1)[1]
    assert "simulate (specimen=demo_qd): " in summary and "n_tilt" in summary
    assert "Traceback" not in summary
    # The traceback is in the job's log, and nothing partial is left behind.
    assert "Traceback" in (workdir / "logs/simulate/demo_qd.log").read_text()
    assert not (workdir / "resources/demo/demo_qd").exists()
