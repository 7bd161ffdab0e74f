"""The checks before any job: every late check of the issue "No silent wrong results" runs
when the workflow plans, and names the sample and the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from conftest import REPO_ROOT
from test_workflow import snakemake
from velox_files import ACQUISITION_ORDER, small_velox

from edxtomo.config import Sample
from edxtomo.errors import ConfigError
from edxtomo.options import load_workflow_config
from edxtomo.preflight import preflight
from edxtomo.runtime import nvidia_gpu_present


def raw_sample(pattern: str, **fields) -> Sample:
    values = {"name": "mine", "raw": pattern, "simulated": None, "maps": None, "angles": None,
              "elements": (), "angles_deg": (), "pixel_size_nm": None} | fields
    return Sample(**values)


def maps_sample(folder: Path, **fields) -> Sample:
    values = {"raw": None, "maps": str(folder / "{element}.tif"),
              "angles": str(folder / "a.rawtlt")} | fields
    return raw_sample(None, **values)


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    """t1.emd ... t13.emd, acquired from -60 to +60 deg, each recording its tilt."""
    folder = tmp_path_factory.mktemp("series")
    for k, angle in enumerate(ACQUISITION_ORDER):
        small_velox(folder / f"t{k + 1}.emd", angle, index=k + 1, seed=k)
    return folder


def problems(sample: Sample, **config) -> str:
    with pytest.raises(ConfigError) as stop:
        preflight({sample.name: sample}, load_workflow_config(config))
    return str(stop.value)


def test_a_good_series_passes(series):
    preflight({"mine": raw_sample(str(series / "t*.emd"))}, load_workflow_config({}))


def test_scrambled_angles_stop_the_plan(series):
    # The acquisition order given in the sheet, but the angles of another scheme.
    wrong = ", ".join(str(a) for a in np.arange(-48.0, 49.0, 8.0))
    text = problems(raw_sample(str(series / "t*.emd"), angles_deg=tuple(map(float,
                                                                          wrong.split(",")))))
    assert "sample 'mine': angles_deg contradicts the stage tilts" in text
    assert "t1.emd records -60 deg, the sheet gives -48 deg" in text


def test_missing_stage_tilt_is_an_error_not_zero(tmp_path):
    small_velox(tmp_path / "a.emd", -10.0)
    small_velox(tmp_path / "b.emd", None, seed=1)
    small_velox(tmp_path / "c.emd", 10.0, seed=2)
    text = problems(raw_sample(str(tmp_path / "*.emd")))
    assert "no stage tilt in" in text and "b.emd" in text and "angles_deg" in text


def test_beam_energy_mismatch_stops_the_plan(tmp_path):
    small_velox(tmp_path / "a.emd", -10.0)
    small_velox(tmp_path / "b.emd", 0.0, beam_kev=10.0, seed=1)
    small_velox(tmp_path / "c.emd", 10.0, seed=2)
    assert "b.emd: beam energy 10 kV differs from 300 kV" in problems(
        raw_sample(str(tmp_path / "*.emd")))


def test_png_renamed_emd_is_named(tmp_path, series):
    (tmp_path / "t0.emd").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    text = problems(raw_sample(str(tmp_path / "*.emd")))
    assert "t0.emd: not a Velox EMD file" in text


def test_angle_count_must_match_the_files(series):
    text = problems(raw_sample(str(series / "t*.emd"), angles_deg=(0.0, 10.0)))
    assert "sample 'mine'" in text and "13" in text


def test_centre_element_must_be_an_element_of_the_sample(series):
    text = problems(raw_sample(str(series / "t*.emd")), analyze={"center": "In"})
    assert "analyze.center 'In' is not one of its elements ['Zn']" in text


def _maps(folder: Path, n_tilt: int, rawtlt_lines: int, nan: bool = False) -> None:
    stack = np.random.default_rng(0).random((n_tilt, 8, 8)).astype(np.float32)
    if nan:
        stack[2, 3, 3] = np.nan
    tifffile.imwrite(folder / "Zn.tif", stack)
    (folder / "a.rawtlt").write_text("\n".join(str(a) for a in range(rawtlt_lines)) + "\n")


def test_rawtlt_length_is_checked_before_any_job(tmp_path):
    _maps(tmp_path, 5, 4)
    text = problems(maps_sample(tmp_path, pixel_size_nm=0.5))
    assert "Zn.tif: 5 images but 4 tilt angles" in text


def test_nan_in_maps_is_found_before_any_job(tmp_path):
    _maps(tmp_path, 5, 5, nan=True)
    text = problems(maps_sample(tmp_path, pixel_size_nm=0.5))
    assert "Zn.tif: 1 NaN or infinite values, in image(s) [3]" in text


def test_fused_on_maps_without_a_haadf_stops_the_plan(tmp_path):
    """The real sQD1 maps have no HAADF: with the default methods the fused job would
    fail after every classical reconstruction had run."""
    _maps(tmp_path, 5, 5)
    sample = maps_sample(tmp_path, pixel_size_nm=0.5)
    text = problems(sample)
    assert ("sample 'mine': method fused (reconstruct.methods) needs a HAADF stack, and its "
            "maps have none") in text
    text = problems(sample, reconstruct={"methods": ["deep"], "deep": {"mbir": {"data": "fused"}}},
                    analyze={"methods": ["deep"]})
    assert "reconstruct.deep.mbir.data: fused needs a HAADF stack" in text
    preflight({sample.name: sample}, load_workflow_config(
        {"reconstruct": {"methods": ["sirt", "tv", "deep"]}}))
    tifffile.imwrite(tmp_path / "HAADF.tif", np.ones((5, 8, 8), np.float32))
    preflight({sample.name: sample}, load_workflow_config({}))


@pytest.mark.skipif(nvidia_gpu_present(), reason="this machine has an NVIDIA GPU")
def test_cuda_without_a_gpu_stops_the_plan(tmp_path):
    config = yaml.safe_load((REPO_ROOT / ".test/config/config.yaml").read_text())
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config | {"device": "cuda"}))
    (tmp_path / "config" / "samples.tsv").write_text(
        (REPO_ROOT / ".test/config/samples.tsv").read_text())
    result = snakemake("-n", "--cores", "1", cwd=tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "device: 'cuda' is configured but this machine has no NVIDIA GPU" in output
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_every_problem_is_listed_once_per_sample(tmp_path, series):
    _maps(tmp_path, 5, 4)
    samples = {"a": raw_sample(str(series / "t*.emd"), name="a", angles_deg=(0.0,)),
               "b": maps_sample(tmp_path, name="b", pixel_size_nm=0.5)}
    with pytest.raises(ConfigError) as stop:
        preflight(samples, load_workflow_config({}))
    lines = str(stop.value).splitlines()
    assert sum(line.strip().startswith("sample 'a'") for line in lines) == 1
    assert sum(line.strip().startswith("sample 'b'") for line in lines) == 1
