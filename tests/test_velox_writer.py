"""The Velox EMD writer, checked through rosettasciio's own Velox reader."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared_path

from edxtomo.errors import EdxtomoInputError
from edxtomo.simulate.velox import (
    PIXEL_MARKER,
    VeloxSettings,
    XrayEvents,
    encode_stream,
    write_velox_emd,
)

hs = pytest.importorskip("hyperspy.api")

SHAPE = (5, 7)  # (ny, nx): not square, so a swapped axis cannot pass
N_FRAMES, N_CHANNELS, N_DETECTORS = 3, 50, 2


def _load(path, **kwargs):
    return hs.load(path, select_type="spectrum_image", **kwargs)


def _dense(events: XrayEvents, mask=None) -> np.ndarray:
    """(frame, y, x, channel) counts built independently of the writer."""
    mask = np.ones(len(events), bool) if mask is None else mask
    dense = np.zeros((N_FRAMES, *SHAPE, N_CHANNELS), dtype=np.int64)
    np.add.at(dense, (events.frame[mask], events.y[mask], events.x[mask],
                      events.channel[mask]), 1)
    return dense


def _segment(signal) -> int:
    """Super-X segment index (0-3) of a per-detector signal: SuperXG21 is 0."""
    return int(signal.original_metadata.BinaryResult.Detector[-1]) - 1


@pytest.fixture
def events() -> XrayEvents:
    rng = np.random.default_rng(7)
    n = 400
    # Repeated channels in one pixel, empty pixels and empty frames of a detector all occur.
    return XrayEvents(
        frame=rng.integers(0, N_FRAMES, n), y=rng.integers(0, SHAPE[0], n),
        x=rng.integers(0, SHAPE[1] - 1, n),  # the last column stays empty
        channel=rng.integers(0, N_CHANNELS // 5, n) * 5, detector=rng.integers(0, N_DETECTORS, n),
    )


@pytest.fixture
def settings() -> VeloxSettings:
    return VeloxSettings(
        pixel_size_nm=0.37, n_channels=N_CHANNELS, dispersion_ev=20.0, energy_offset_ev=-120.0,
        beam_energy_kev=200.0, tilt_deg=-47.5, elements=("Zn", "Se", "S"), n_frames=N_FRAMES,
        n_detectors=N_DETECTORS, offset_nm=(1.5, -2.0),
    )


def test_encode_stream_layout():
    # Two frames of two pixels: pixel 0 holds channels 3 and 1, pixel 3 (frame 1, pixel 1)
    # channel 2; every pixel is closed by the marker, the last one included (as Velox does).
    stream, starts = encode_stream(np.array([0, 3, 0]), np.array([3, 2, 1]), n_pixels=4)
    m = PIXEL_MARKER
    np.testing.assert_array_equal(stream, [1, 3, m, m, m, 2, m])
    np.testing.assert_array_equal(starts, [0, 3, 4, 5])


def test_round_trip_counts_and_metadata(tmp_path, events, settings):
    haadf = np.random.default_rng(1).random(SHAPE).astype(np.float32)
    path = write_velox_emd(tmp_path / "t.emd", events, {"HAADF": haadf}, settings)

    frames = _load(path, sum_frames=False)
    np.testing.assert_array_equal(np.asarray(frames.data), _dense(events))
    summed = _load(path, sum_frames=True)
    np.testing.assert_array_equal(np.asarray(summed.data), _dense(events).sum(axis=0))
    per_detector = _load(path, sum_frames=False, sum_EDS_detectors=False)
    assert [_segment(s) for s in per_detector] == list(range(N_DETECTORS))
    for k, signal in enumerate(per_detector):
        np.testing.assert_array_equal(np.asarray(signal.data),
                                      _dense(events, events.detector == k))

    x_axis, y_axis = (summed.axes_manager[name] for name in ("x", "y"))
    for axis, offset in ((x_axis, 1.5), (y_axis, -2.0)):
        assert axis.units == "nm"
        assert axis.scale == pytest.approx(0.37, rel=1e-12)
        assert axis.offset == pytest.approx(offset, rel=1e-12)
    energy = summed.axes_manager.signal_axes[0]
    assert (energy.units, energy.scale, energy.offset) == ("keV", pytest.approx(0.02),
                                                           pytest.approx(-0.12))
    md = summed.metadata
    assert md.Acquisition_instrument.TEM.beam_energy == 200.0
    assert md.Acquisition_instrument.TEM.Stage.tilt_alpha == -47.5
    assert list(md.Sample.elements) == ["Zn", "Se", "S"]
    assert md.Acquisition_instrument.TEM.Detector.EDS.number_of_frames == N_FRAMES
    assert frames.axes_manager["Time"].size == N_FRAMES

    image = hs.load(path, select_type="images")
    assert image.metadata.General.title == "HAADF"
    np.testing.assert_array_equal(image.data, haadf)
    assert image.axes_manager["x"].scale == pytest.approx(0.37, rel=1e-12)


def test_same_inputs_same_bytes(tmp_path, events, settings):
    image = {"HAADF": np.ones(SHAPE, np.float32)}
    a = write_velox_emd(tmp_path / "a.emd", events, image, settings, uuid_seed=3)
    b = write_velox_emd(tmp_path / "b.emd", events, image, settings, uuid_seed=3)
    c = write_velox_emd(tmp_path / "c.emd", events, image, settings, uuid_seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()  # the group UUIDs follow the seed


def test_gzip_streams_and_empty_element_selection(tmp_path, events, settings):
    settings = VeloxSettings(**{**settings.__dict__, "elements": ()})
    path = write_velox_emd(tmp_path / "g.emd", events, {"DF4": np.zeros(SHAPE, np.uint16)},
                           settings, compression="gzip")
    signal = _load(path, sum_frames=False)
    np.testing.assert_array_equal(np.asarray(signal.data), _dense(events))
    assert list(signal.metadata.Sample.elements) == []
    assert hs.load(path, select_type="images").metadata.General.title == "DF4"


def test_rejects_events_outside_the_scan(tmp_path, events, settings):
    bad = XrayEvents(events.frame, events.y, events.x + 2, events.channel, events.detector)
    with pytest.raises(EdxtomoInputError, match=r"bad\.emd: event x values span"):
        write_velox_emd(tmp_path / "bad.emd", bad, {"HAADF": np.zeros(SHAPE)}, settings)
    with pytest.raises(EdxtomoInputError, match="at least one STEM image"):
        write_velox_emd(tmp_path / "bad.emd", events, {}, settings)
    assert not (tmp_path / "bad.emd").exists()


def test_rewrites_a_real_velox_file(tmp_path):
    """Read a real Velox file, write its spectrum image and HAADF again, read both back."""
    real = shared_path("real", "velox_si_16x16_2frames.emd")
    streams = _load(real, sum_frames=False, sum_EDS_detectors=False)
    original = _load(real, sum_frames=False)
    haadf = next(im for im in hs.load(real, select_type="images")
                 if im.metadata.General.title == "HAADF")
    parts = []
    for signal in streams:
        counts = np.asarray(signal.data)
        coords = np.nonzero(counts)
        parts.append(XrayEvents.from_counts(coords, counts[coords], detector=_segment(signal)))
    md = original.metadata
    x_axis, y_axis = original.axes_manager["x"], original.axes_manager["y"]
    energy = original.axes_manager.signal_axes[0]
    settings = VeloxSettings(
        pixel_size_nm=x_axis.scale, n_channels=energy.size,
        dispersion_ev=energy.scale * 1000, energy_offset_ev=energy.offset * 1000,
        beam_energy_kev=md.Acquisition_instrument.TEM.beam_energy,
        tilt_deg=md.Acquisition_instrument.TEM.Stage.tilt_alpha,
        elements=tuple(md.Sample.elements), n_frames=original.axes_manager["Time"].size,
        n_detectors=len(streams), offset_nm=(x_axis.offset, y_axis.offset),
    )
    path = write_velox_emd(tmp_path / "copy.emd", XrayEvents.concatenate(parts),
                           {"HAADF": haadf.data}, settings)

    copy = _load(path, sum_frames=False)
    np.testing.assert_array_equal(np.asarray(copy.data), np.asarray(original.data))
    copies = {_segment(s): s for s in _load(path, sum_frames=False, sum_EDS_detectors=False)}
    for theirs in streams:
        mine = copies[_segment(theirs)]
        np.testing.assert_array_equal(np.asarray(mine.data), np.asarray(theirs.data))
    for name in ("x", "y", "Time", "X-ray energy"):
        ours, theirs = copy.axes_manager[name], original.axes_manager[name]
        assert (ours.size, ours.units) == (theirs.size, theirs.units)
        assert ours.offset == pytest.approx(theirs.offset, rel=1e-9, abs=1e-12)
        if name != "Time":  # the frame time is written from the dwell time, not copied
            assert ours.scale == pytest.approx(theirs.scale, rel=1e-9)
    ours, theirs = copy.metadata.Acquisition_instrument.TEM, md.Acquisition_instrument.TEM
    assert ours.beam_energy == theirs.beam_energy
    assert ours.Stage.tilt_alpha == theirs.Stage.tilt_alpha
    assert list(copy.metadata.Sample.elements) == list(md.Sample.elements)

    image = hs.load(path, select_type="images")
    np.testing.assert_array_equal(image.data, haadf.data)
    assert image.data.dtype == haadf.data.dtype
    assert image.axes_manager["x"].scale == pytest.approx(haadf.axes_manager["x"].scale,
                                                          rel=1e-9)
