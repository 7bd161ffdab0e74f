"""The options classes are the one home of every option: documents, config files, params."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT

from edxtomo.options import (
    METHOD_KEYS,
    DeepOptions,
    ReconstructOptions,
    load_workflow_config,
)
from edxtomo.options.docs import generated_files, option_rows
from edxtomo.options.workflow import WorkflowConfig


@pytest.mark.parametrize("path", list(generated_files(REPO_ROOT)), ids=lambda p: p.name)
def test_generated_documents_are_current(path):
    """Schema, README tables and config/README.md are made from the classes."""
    expected = generated_files(REPO_ROOT)[path]
    assert path.read_text() == expected, f"{path} is stale: run python -m edxtomo.options"


def test_every_option_has_a_one_line_meaning():
    rows = list(option_rows(WorkflowConfig))
    assert len(rows) > 60
    for key, default, meaning in rows:
        assert meaning and "\n" not in meaning, key
        assert default, key


@pytest.mark.parametrize("config_path", ["config/config.yaml", ".test/config/config.yaml"])
def test_shipped_configurations_are_valid(config_path):
    """Every key set in a shipped configuration exists, with a valid value."""
    load_workflow_config(yaml.safe_load((REPO_ROOT / config_path).read_text()))


def test_schema_defaults_equal_the_classes():
    schema = yaml.safe_load((REPO_ROOT / "config/schemas/config.schema.yaml").read_text())
    sirt = schema["$defs"]["SirtOptions"]["properties"]["iterations"]["default"]
    tv = schema["$defs"]["TvOptions"]["properties"]["iterations"]["default"]
    assert sirt == ReconstructOptions().sirt.iterations
    assert tv == ReconstructOptions().tv.iterations


@pytest.mark.parametrize("method", list(METHOD_KEYS))
def test_method_settings_hold_only_that_method(method):
    settings = ReconstructOptions().method_settings(method)
    # deep's self-check runs tv on held-out counts, so deep reads tv's settings too.
    others = {"sirt", "fbp", "tv", "deep"} - {method} - ({"tv"} if method == "deep" else set())
    assert not others & set(settings)
    assert "methods" not in settings
    # A script rebuilds the options with one call.
    rebuilt = ReconstructOptions.model_validate(settings)
    assert getattr(rebuilt, method) == getattr(ReconstructOptions(), method)


def test_deep_options_round_trip_through_params():
    options = DeepOptions.model_validate({"enrich": {"steps": 7}, "mbir": {"weight": {"Se": 1}}})
    again = DeepOptions.model_validate(options.model_dump(mode="json"))
    assert again == options and again.enrich.steps == 7


@pytest.mark.parametrize("script", sorted(
    [p.name for p in (REPO_ROOT / "scripts").glob("figure_*.py")] + ["tables.py"]))
def test_figure_and_table_jobs_do_not_import_torch(script):
    """What a figure or table script imports (its edxtomo modules) leaves torch out."""
    lines = (REPO_ROOT / "scripts" / script).read_text().splitlines()
    imports = [line for line in lines if line.startswith(("import ", "from "))]
    code = "\n".join([*imports, "import sys", "sys.exit('torch' in sys.modules)"])
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


def test_planning_modules_do_not_import_torch():
    """The Snakemake process imports these to plan; torch stays out."""
    code = ("import sys, edxtomo.config, edxtomo.options, edxtomo.runtime, edxtomo.options.docs;"
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_budget_follows_the_device_and_explicit_counts_win():
    fast, name = DeepOptions().with_budget("cpu")
    assert name == "fast" and (fast.denoise.steps, fast.enrich.steps) == (160, 60)
    assert fast.denoise.batch_size == 4
    full, name = DeepOptions().with_budget("cuda")
    assert name == "full" and (full.mbir.outer, full.final.iterations) == (20, 200)
    assert full.denoise.batch_size == 8
    mine, name = DeepOptions.model_validate(
        {"budget": "fast", "enrich": {"steps": 7}, "denoise": {"batch_size": 6}}
    ).with_budget("cuda")
    assert name == "fast" and mine.enrich.steps == 7 and mine.denoise.steps == 160
    assert mine.denoise.batch_size == 6
