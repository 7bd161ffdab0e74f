"""Workflow tests: dry runs, lint, and the bad-configuration stops, through real Snakemake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

pytestmark = pytest.mark.workflow


def snakemake(*args: str, cwd: Path = REPO_ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the Snakemake CLI of this interpreter; returns the completed process."""
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"),
               "--directory", str(cwd), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_dry_run_plans_the_demo():
    result = snakemake("-n", "--cores", "2")
    assert result.returncode == 0, result.stderr + result.stdout
    plan = result.stdout
    for rule in ("simulate", "extract", "align", "reconstruct", "reconstruct_deep", "analyze",
                 "tables", "figure_slices", "figure_thickness", "figure_distributions"):
        assert f"rule {rule}:" in plan or f" {rule} " in plan, f"{rule} missing from the plan"


def test_dry_run_with_slurm_profile():
    pytest.importorskip("snakemake_executor_plugin_slurm")
    result = snakemake("-n", "--profile", str(REPO_ROOT / "profiles" / "slurm"))
    assert result.returncode == 0, result.stderr + result.stdout
    assert "reconstruct_deep" in result.stdout


def test_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_config_stops_before_any_job(tmp_path):
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    config["reconstruct"]["sirt"]["iterations"] = "many"
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
