"""Memory-bounded processing: slab PDHG (edxtomo.tomo.slabs) and tiled networks (deep.unet).

Every comparison here is between two ways of computing the same numbers: the cut one must
equal the whole one to float32 rounding. Where the order of floating-point sums can change
(a sparse product over a different number of columns, a convolution over a different batch
or tile size), the difference is a few ulps per operation; the results go through tens of
operations (23 PDHG iterations; ten 3x3 convolutions of 4-64 channels), so a relative
difference of 1e-5 (about 100 float32 ulps) bounds rounding, while a halo one slice short
of the dependency already exceeds it, and no halo or a halved network margin exceed 1e-3
(checked below, so the comparisons can fail).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from edxtomo.deep import reconstruct_deep
from edxtomo.deep.enrich import enrich_views
from edxtomo.deep.unet import DenoiserNet, UNet, apply_tiled
from edxtomo.errors import EdxtomoInputError
from edxtomo.options import DeepOptions, EnrichOptions
from edxtomo.tomo import project, slabs
from edxtomo.tomo.pdhg import _channel_weights, _PdhgProblem
from edxtomo.tomo.projector import Projector
from edxtomo.tomo.tv import mbir_l2, tv_kl

ANGLES = np.linspace(-60, 60, 5)
NY = 11  # slab sizes 3 and 4 do not divide it
ROUNDING = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _counts(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Poisson counts of two random channels ``(2, 5, NY, 10)`` and a flat background."""
    rng = np.random.default_rng(seed)
    volume = rng.random((2, 10, NY, 10)).astype(np.float32)
    expected = project(volume, ANGLES, device="cpu")
    background = np.full_like(expected, 0.5)
    return rng.poisson(5 * expected + background).astype(np.float32), background


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def _solve(kind: str, counts, background, **kwargs) -> np.ndarray:
    common = {"device": "cpu", "progress": False, **kwargs}
    if kind == "kl+tv":
        return tv_kl(counts, ANGLES, weight=[0.3, 1.0], iterations=23, background=background,
                     **common)
    reg = kind.split("+")[1]
    return mbir_l2(counts, ANGLES, reg=reg, weight=[0.05, 0.2], outer=23, inner=1, **common)


@pytest.mark.parametrize("kind", ["kl+tv", "l2+tv", "l2+l1"])
def test_slab_pdhg_equals_the_whole_volume(kind):
    counts, background = _counts()
    whole = _solve(kind, counts, background)
    assert whole.shape == (2, 10, NY, 10) and whole.max() > 0
    # forced slabs: one slice (halo wider than the slab), sizes that leave a short last
    # slab, and the first and last slabs meet the volume's ends
    for slab in (1, 3, 4):
        cut = _solve(kind, counts, background, slab_slices=slab)
        assert _relative(cut, whole) < ROUNDING, (kind, slab)


def test_slab_plan_from_a_memory_cap_runs_blocks_and_equals_the_whole_volume():
    counts, background = _counts(1)
    device_bytes, _ = slabs.slice_bytes(10, 10, len(ANGLES), "tv")
    cap_gib = 9 * device_bytes / 0.8 / 2**30  # room for 9 slices of one channel
    plan = slabs.plan_slabs(2, NY, 23, device_bytes, slabs.device_budget(
        torch.device("cpu"), 0, cap_gib))
    assert plan.channels == 1 and plan.slab_slices < NY and plan.block_iterations < 23
    whole = _solve("kl+tv", counts, background)
    capped = _solve("kl+tv", counts, background, memory_gib=cap_gib)
    assert _relative(capped, whole) < ROUNDING


def test_a_halo_one_slice_short_breaks_the_equality():
    """The comparison above can fail: TV couples slices, one slice per iteration on each
    side, so a halo of ``k - 1`` slices for blocks of ``k`` iterations lets what happens at
    a slab's cut edge into its interior (``k`` suffices for the iterates; the plan loads
    ``k + 1`` so that the interior's TV objective reads a valid next slice)."""
    counts, background = _counts()
    op = Projector(ANGLES, 10, device="cpu")

    def run(plan: slabs.SlabPlan) -> np.ndarray:
        problem = _PdhgProblem(op, counts, background, _channel_weights([0.3, 1.0], 2, op.device),
                               "kl", "tv", True, 23)
        with torch.no_grad():
            return slabs.run_slabs(problem, plan, 23, op.device, lambda *args: None)

    whole = run(slabs.SlabPlan(2, NY, 23))
    exact = run(slabs.SlabPlan(2, 3, 4, halo=5))
    short = run(slabs.SlabPlan(2, 3, 4, halo=3))
    none = run(slabs.SlabPlan(2, 3, 4, halo=0))
    assert _relative(exact, whole) < ROUNDING
    assert _relative(short, whole) > ROUNDING  # 7e-5 measured: damped, but there
    assert _relative(none, whole) > 1e-3


def test_slab_plan_prefers_whole_volumes_then_channel_groups():
    assert slabs.plan_slabs(3, 100, 50, 10, 10 * 100 * 3) == slabs.SlabPlan(3, 100, 50)
    assert slabs.plan_slabs(3, 100, 50, 10, 10 * 100 * 2 + 5) == slabs.SlabPlan(2, 100, 50)
    plan = slabs.plan_slabs(3, 100, 50, 10, 10 * 64)
    assert plan == slabs.SlabPlan(1, 64 - 2 * 9, 8, halo=9)
    # without coupling (l1) slabs need no halo and run every iteration at once
    assert slabs.plan_slabs(3, 100, 50, 10, 10 * 64, coupled=False) == slabs.SlabPlan(1, 64, 50)


def test_memory_check_names_a_slab_size_that_fits(monkeypatch):
    """A small free memory (the free-memory function patched for this check only)."""
    device_bytes, _ = slabs.slice_bytes(10, 10, len(ANGLES), "tv")
    monkeypatch.setattr(slabs, "available_bytes", lambda device: 9 * device_bytes)
    with pytest.raises(EdxtomoInputError, match=r"slab_slices=3 \(or fewer\)"):
        slabs.plan_slabs(2, NY, 23, device_bytes, slabs.device_budget(
            torch.device("cuda"), 0, None), slab_slices=6)
    assert slabs.plan_slabs(2, NY, 23, device_bytes, 7 * device_bytes, slab_slices=3)
    monkeypatch.setattr(slabs, "available_bytes", lambda device: 2 * device_bytes)
    counts, background = _counts()
    with pytest.raises(EdxtomoInputError, match="PDHG kl\\+tv .*bin the projections"):
        _solve("kl+tv", counts, background)
    with pytest.raises(EdxtomoInputError, match="split-Bregman .*use solver 'pdhg'"):
        _solve("l2+tv", counts, background, solver="split_bregman")
    monkeypatch.setattr(slabs, "available_bytes", lambda device: 1000)
    with pytest.raises(EdxtomoInputError, match="host memory"):
        slabs.check_host(4 * 2 * 10 * NY * 10, "PDHG kl+tv")


def _random_net(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random non-zero weights (a fresh net's zero head would make every output equal)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return net.eval()


@pytest.mark.parametrize("net", [UNet(3, 2, 4, 2), UNet(2, 2, 4, 3),
                                 DenoiserNet(2, [[0, 1, 2]], 4, 2),
                                 DenoiserNet(2, [[0, 3, 4], [1, 2, 4]], 4, 2)],
                         ids=["unet-depth2", "unet-depth3", "denoiser", "grouped-denoiser"])
def test_tiled_network_equals_the_whole_image(net):
    net = _random_net(net, 0)
    x = torch.rand(3, int(net.gather.max()) + 1 if isinstance(net, DenoiserNet)
                   else net.down[0][0].in_channels, 70, 53,
                   generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = net(x)
        one_view = apply_tiled(net, x, net.bytes_per_px * 70 * 53)  # sub-batches of one
        tiles = apply_tiled(net, x, net.bytes_per_px * 60**2)  # tiles of a few px
        assert _relative(one_view.numpy(), whole.numpy()) < ROUNDING
        assert _relative(tiles.numpy(), whole.numpy()) < ROUNDING
        short = apply_tiled(_ShortMargin(net), x, net.bytes_per_px * 60**2)
        assert _relative(short.numpy(), whole.numpy()) > 1e-3


class _ShortMargin(torch.nn.Module):
    """The same net claiming half its receptive field: tiles then see their own edges."""

    def __init__(self, net):
        super().__init__()
        self.net, self.depth = net, net.depth
        self.margin_px, self.bytes_per_px = net.margin_px // 2, net.bytes_per_px

    def forward(self, x):
        return self.net(x)


def test_enrichment_in_slabs_and_tiles_equals_the_whole_volume():
    rng = np.random.default_rng(2)
    volumes = rng.random((2, 16, 24, 16)).astype(np.float32)
    measured = project(volumes, ANGLES, device="cpu") * 1.1
    options = EnrichOptions(steps=2, width=4, batch_size=2, patch_px=16, step_deg=30.0)
    args = (volumes, measured, ANGLES)
    dense, whole, _ = enrich_views(*args, options=options, device="cpu", progress=False)
    # a cap of a few slices of reprojection and a tile of about 30 px
    cap_gib = 30**2 * UNet(2, 2, 4, 2).bytes_per_px / 0.8 / 2**30
    _, cut, _ = enrich_views(*args, options=options, device="cpu", progress=False,
                             memory_gib=cap_gib)
    assert len(dense) == 5 and cut.shape == whole.shape == (2, 5, 24, 16)
    assert _relative(cut, whole) < ROUNDING


def test_deep_steps_b_to_d_under_a_memory_cap_equal_the_uncapped_run(caplog):
    """The options reach steps b-d: a cap of 9 slices of one element runs b and d in slabs
    and c's projections and network in pieces, with the uncapped result."""
    rng = np.random.default_rng(3)
    volume = rng.random((3, 16, NY, 16)).astype(np.float32)
    views = project(volume, ANGLES, device="cpu")
    projections = dict(zip(["Zn", "Se", "S"], views, strict=True))
    device_bytes, _ = slabs.slice_bytes(16, 16, len(ANGLES), "tv")
    cap_gib = 9 * device_bytes / 0.8 / 2**30
    options = {"mbir": {"weight": 0.03, "outer": 3, "inner": 3},
               "enrich": {"steps": 2, "width": 4, "patch_px": 16, "step_deg": 30.0},
               "final": {"iterations": 5}, "selfcheck": False}
    whole = reconstruct_deep(projections, ANGLES, DeepOptions.model_validate(options),
                             device="cpu", progress=False)
    options["mbir"]["memory_gib"] = cap_gib
    with caplog.at_level(logging.INFO, logger="edxtomo.tomo.pdhg"):
        capped = reconstruct_deep(projections, ANGLES, DeepOptions.model_validate(options),
                                  device="cpu", progress=False)
    assert caplog.text.count("1 of 3 channel(s) at a time, slabs of") == 2  # steps b and d
    for element in projections:
        assert _relative(capped.mbir_volumes[element], whole.mbir_volumes[element]) < ROUNDING
        assert _relative(capped.volumes[element], whole.volumes[element]) < ROUNDING
