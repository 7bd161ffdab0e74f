"""Configuration and sample-sheet validation (edxtomo.config)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from edxtomo.config import ConfigError, load_samples, validate_config

CONFIG_SCHEMA = REPO_ROOT / "config" / "schemas" / "config.schema.yaml"
SAMPLES_SCHEMA = REPO_ROOT / "config" / "schemas" / "samples.schema.yaml"


@pytest.fixture
def config():
    with open(REPO_ROOT / "config" / "config.yaml") as stream:
        return validate_config(yaml.safe_load(stream), CONFIG_SCHEMA)


def write_sheet(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = ["sample", "raw", "maps", "angles", "elements", "angles_deg", "pixel_size_nm"]
    lines = ["\t".join(columns)]
    lines += ["\t".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_default_config_is_valid_and_gets_defaults(config):
    assert config["seed"] == 0
    assert config["extract"]["integration_fwhm"] > 0
    assert config["reconstruct"]["sirt"]["iterations"] >= 1
    # A config without optional sections gets every default filled in.
    minimal = validate_config({"samples": "config/samples.tsv"}, CONFIG_SCHEMA)
    assert minimal["device"] == "auto"
    assert minimal["align"]["refine"] == "projection_matching"
    assert minimal["reconstruct"]["backend"] == "torch"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["reconstruct"].update(bogus=1), r"key 'reconstruct'.*'bogus'"),
        (lambda c: c["reconstruct"]["sirt"].update(iterations="many"),
         r"key 'reconstruct\.sirt\.iterations'.*not of type 'integer'"),
        (lambda c: c.update(device="tpu"), r"key 'device'.*'tpu'"),
        (lambda c: c["extract"].update(integration_fwhm=0), r"key 'extract\.integration_fwhm'"),
        (lambda c: c.update(unknown_stage={}), r"'unknown_stage' was unexpected"),
    ],
)
def test_bad_config_names_the_key(config, change, message):
    bad = copy.deepcopy(config)
    change(bad)
    with pytest.raises(ConfigError, match=message):
        validate_config(bad, CONFIG_SCHEMA)


def test_sample_sheet_resolves_raw_maps_and_simulated(tmp_path, config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(3):
        (tmp_path / f"tilt_{i}.emd").write_bytes(b"")
    (tmp_path / "Se.tif").write_bytes(b"")
    (tmp_path / "angles.rawtlt").write_text("-10\n0\n10\n")
    sheet = write_sheet(tmp_path / "samples.tsv", [
        {"sample": "raw_one", "raw": "tilt_*.emd", "angles_deg": "-10, 0, 10",
         "pixel_size_nm": "0.25"},
        {"sample": "maps_one", "maps": "{element}.tif", "angles": "angles.rawtlt",
         "elements": "Se"},
        {"sample": "demo", "raw": "resources/demo/demo_qd/*.emd"},
    ])
    samples = load_samples(sheet, SAMPLES_SCHEMA, config)
    assert list(samples) == ["raw_one", "maps_one", "demo"]
    assert samples["raw_one"].angles_deg == (-10.0, 0.0, 10.0)
    assert samples["raw_one"].pixel_size_nm == 0.25
    assert samples["maps_one"].elements == ("Se",)
    assert samples["demo"].simulated == "demo_qd"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"sample": "a", "raw": "nothing_*.emd"}], r"line 2 \(sample 'a'\).*matches no file"),
        ([{"sample": "a", "raw": "x_*.emd"}, {"sample": "a", "raw": "x_*.emd"}],
         r"line 3 \(sample 'a'\).*duplicate sample name"),
        ([{"sample": "bad name", "raw": "x_*.emd"}], r"key 'sample'.*does not match"),
        ([{"sample": "a", "raw": "x_*.emd", "pixel_size_nm": "small"}], r"key 'pixel_size_nm'"),
        ([{"sample": "a", "raw": "x_*.emd", "angles_deg": "1;2"}], r"key 'angles_deg'"),
        ([{"sample": "a", "maps": "{element}.tif"}], r"needs both 'maps' and 'angles'"),
        ([{"sample": "a", "maps": "Se.tif", "angles": "a.rawtlt"}], r"no \{element\} placeholder"),
        ([{"sample": "a", "maps": "{element}.tif", "angles": "a.rawtlt", "elements": "Zn"}],
         r"map of Zn 'Zn.tif' does not exist"),
        ([{"sample": "a"}], r"no data"),
        ([{"sample": "a", "raw": "x_*.emd", "maps": "{element}.tif"}], r"not both"),
    ],
)
def test_bad_sample_sheet_names_the_row(tmp_path, config, monkeypatch, rows, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x_0.emd").write_bytes(b"")
    (tmp_path / "Se.tif").write_bytes(b"")
    (tmp_path / "a.rawtlt").write_text("0\n")
    sheet = write_sheet(tmp_path / "samples.tsv", rows)
    with pytest.raises(ConfigError, match=message):
        load_samples(sheet, SAMPLES_SCHEMA, config)


def test_unknown_column_is_rejected(tmp_path, config):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample\traw\tcolour\na\tx\tred\n")
    with pytest.raises(ConfigError, match=r"unknown column\(s\) \['colour'\]"):
        load_samples(sheet, SAMPLES_SCHEMA, config)
