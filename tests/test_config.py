"""Configuration and sample-sheet validation (edxtomo.config)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT

from edxtomo.config import load_samples, raw_inputs
from edxtomo.errors import ConfigError
from edxtomo.options import load_workflow_config

SAMPLES_SCHEMA = REPO_ROOT / "config" / "schemas" / "samples.schema.yaml"


@pytest.fixture
def config():
    with open(REPO_ROOT / "config" / "config.yaml") as stream:
        return load_workflow_config(yaml.safe_load(stream))


def write_sheet(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = ["sample", "raw", "maps", "angles", "elements", "angles_deg", "pixel_size_nm"]
    lines = ["\t".join(columns)]
    lines += ["\t".join(row.get(c, "") for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_default_config_is_valid_and_gets_defaults(config):
    assert config.seed == 0
    assert config.extract.integration_fwhm > 0
    assert config.reconstruct.sirt.iterations >= 1
    # A config without optional sections gets every default filled in.
    minimal = load_workflow_config({})
    assert minimal.samples == "config/samples.tsv"
    assert minimal.device == "auto"
    assert minimal.align.refine == "projection_matching"
    assert minimal.reconstruct.backend == "torch"
    assert minimal.reconstruct.deep.budget == "auto"
    assert minimal.reconstruct.deep.denoise.steps is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["reconstruct"].update(bogus=1),
         r"key 'reconstruct\.bogus': Extra inputs are not permitted"),
        (lambda c: c["reconstruct"]["sirt"].update(iterations="many"),
         r"key 'reconstruct\.sirt\.iterations': Input should be a valid integer.*'many'"),
        (lambda c: c.update(device="tpu"), r"key 'device': Input should be 'auto'.*'tpu'"),
        (lambda c: c["extract"].update(integration_fwhm=0),
         r"key 'extract\.integration_fwhm': Input should be greater than 0"),
        (lambda c: c.update(unknown_stage={}), r"key 'unknown_stage'"),
        (lambda c: c["reconstruct"]["tv"].update(weight=-1),
         r"key 'reconstruct\.tv\.weight': Input should be greater than or equal to 0"),
        (lambda c: c["analyze"].update(shell_threshold=1.5),
         r"key 'analyze\.shell_threshold': Input should be less than 1 \(got 1\.5\)"),
        (lambda c: c["reconstruct"]["deep"]["mbir"].update(reg="l1"),
         r"key 'reconstruct\.deep\.mbir'.*data 'kl' works with reg 'tv'"),
        (lambda c: c["reconstruct"]["deep"]["denoise"].update(networks="many"),
         r"key 'reconstruct\.deep\.denoise\.networks': Input should be 'per_element'"),
    ],
)
def test_bad_config_names_the_key(config, change, message):
    bad = config.model_dump(mode="json")
    change(bad)
    with pytest.raises(ConfigError, match=message):
        load_workflow_config(bad)


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
    # The plan must not depend on what exists on disk: the simulated sample is simulated
    # whether or not its files exist, and its input is the simulate rule's folder.
    (tmp_path / "resources/demo/demo_qd").mkdir(parents=True)
    (tmp_path / "resources/demo/demo_qd/tilt_000.emd").write_bytes(b"")
    assert load_samples(sheet, SAMPLES_SCHEMA, config)["demo"] == samples["demo"]
    assert raw_inputs(samples["demo"]) == {"raw": "resources/demo/demo_qd"}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"sample": "a", "raw": "nothing_*.emd"}], r"line 2 \(sample 'a'\).*matches no file"),
        ([{"sample": "a", "raw": "x_*.emd"}, {"sample": "a", "raw": "x_*.emd"}],
         r"line 3 \(sample 'a'\).*duplicate sample name"),
        ([{"sample": "bad name", "raw": "x_*.emd"}], r"key 'sample': 'bad name' is not letters"),
        ([{"sample": "a", "raw": "x_*.emd", "pixel_size_nm": "-0.5"}],
         r"key 'pixel_size_nm': '-0.5' is not a positive number, the pixel size in nm"),
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


def test_space_separated_sheet_gets_a_hint_about_tabs(tmp_path, config):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("sample raw\nmine data/*.emd\n")
    with pytest.raises(ConfigError, match=r"must be tab-separated.*separated by spaces"):
        load_samples(sheet, SAMPLES_SCHEMA, config)
