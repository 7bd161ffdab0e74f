"""The projector: geometry convention, exact adjoint, autograd, ASTRA equivalence, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edxtomo.errors import EdxtomoInputError
from edxtomo.tomo import Projector, backproject, project, resolve_device, system_matrix

ANGLES = np.array([-70.0, -41.5, -12.0, 0.0, 3.3, 30.0, 66.0, 90.0])


def test_adjoint_identity_float32():
    rng = np.random.default_rng(0)
    volume = rng.random((2, 20, 6, 26), dtype=np.float32)
    proj = rng.random((2, ANGLES.size, 6, 26), dtype=np.float32)
    lhs = np.vdot(project(volume, ANGLES).astype(np.float64), proj)
    rhs = np.vdot(volume.astype(np.float64), backproject(proj, ANGLES, nz=20))
    # Each side sums ~1e4 products rounded in float32 (eps 6e-8); random-walk accumulation
    # bounds the relative difference far below 1e-5, while any geometric mismatch between
    # forward and adjoint changes it at the 1e-2 level.
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_zero_degrees_is_the_sum_along_z():
    rng = np.random.default_rng(1)
    volume = rng.random((13, 4, 17), dtype=np.float32)
    proj = project(volume, [0.0])
    np.testing.assert_allclose(proj[0], volume.sum(axis=0), rtol=1e-6)


def test_mass_is_conserved_at_every_angle():
    rng = np.random.default_rng(2)
    n = 24
    zc, xc = np.mgrid[:n, :n] - (n - 1) / 2
    # Inside the inscribed circle no voxel shadow leaves the detector.
    inside = (zc**2 + xc**2) < (n / 2 - 1.5) ** 2
    volume = (rng.random((n, 3, n)) * inside[:, None, :]).astype(np.float32)
    totals = project(volume, np.linspace(-90, 90, 19)).sum(axis=(1, 2))
    np.testing.assert_allclose(totals, volume.sum(), rtol=1e-5)


@pytest.mark.parametrize("d", [6.0, -4.0])
def test_point_at_positive_z_moves_with_plus_sin_theta(d):
    n = 33
    volume = np.zeros((n, 1, n), dtype=np.float32)
    volume[int(16 + d), 0, 16] = 1.0
    angles = np.array([-60.0, -25.0, 0.0, 10.0, 45.0, 75.0])
    proj = project(volume, angles)[:, 0]
    u_c = np.arange(n) - (n - 1) / 2
    centroid = (proj * u_c).sum(axis=1) / proj.sum(axis=1)
    # The footprint is binned on unit detector pixels, which moves its centroid by less
    # than 0.1 px; the opposite sign convention would be off by 2 |d sin(theta)| > 1.3 px.
    np.testing.assert_allclose(centroid, d * np.sin(np.deg2rad(angles)), atol=0.1)


def test_matches_astra_strip_kernel_with_negated_angles():
    astra = pytest.importorskip("astra")
    rng = np.random.default_rng(3)
    nz, nx = 18, 22
    volume = rng.random((nz, 1, nx), dtype=np.float32)
    proj_geom = astra.create_proj_geom("parallel", 1.0, nx, -np.deg2rad(ANGLES))
    vol_geom = astra.create_vol_geom(nz, nx)
    projector_id = astra.create_projector("strip", proj_geom, vol_geom)
    try:
        _, sinogram = astra.create_sino(volume[:, 0], projector_id)
    finally:
        astra.projector.delete(projector_id)
    # Same strip-area weights; only float32 summation order differs.
    np.testing.assert_allclose(project(volume, ANGLES)[:, 0], sinogram, rtol=1e-4, atol=1e-4)


def test_system_matrix_shape_and_cache():
    matrix = system_matrix(ANGLES, 10, 7)
    assert matrix.shape == (ANGLES.size * 10, 7 * 10)
    assert system_matrix(ANGLES, 10, 7) is matrix


def test_channel_axis_and_types_are_kept():
    rng = np.random.default_rng(4)
    volume = rng.random((3, 10, 5, 12), dtype=np.float32)
    proj = project(volume, ANGLES)
    assert proj.shape == (3, ANGLES.size, 5, 12) and proj.dtype == np.float32
    for ch in range(3):
        np.testing.assert_allclose(proj[ch], project(volume[ch], ANGLES), rtol=1e-6)
    as_tensor = project(torch.from_numpy(volume), ANGLES)
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), proj, rtol=1e-6)
    assert backproject(proj, ANGLES).shape == (3, 12, 5, 12)
    assert backproject(proj, ANGLES, nz=10).shape == volume.shape


def test_gradients_are_the_adjoint():
    rng = np.random.default_rng(5)
    projector = Projector(ANGLES, 14, 9, device="cpu")
    volume = torch.tensor(rng.random((2, 9, 3, 14), dtype=np.float32), requires_grad=True)
    weights = torch.tensor(rng.random((2, ANGLES.size, 3, 14), dtype=np.float32))
    (projector.forward(volume) * weights).sum().backward()
    np.testing.assert_allclose(volume.grad.numpy(), projector.adjoint(weights).numpy(), rtol=1e-6)
    proj = torch.tensor(rng.random((2, ANGLES.size, 3, 14), dtype=np.float32), requires_grad=True)
    target = torch.tensor(rng.random((2, 9, 3, 14), dtype=np.float32))
    (projector.adjoint(proj) * target).sum().backward()
    np.testing.assert_allclose(proj.grad.numpy(), projector.forward(target).numpy(), rtol=1e-6)


def test_products_into_buffers_equal_fresh_products_exactly():
    # The buffers start as NaN: a product that read them (beta != 0) would return NaN. The
    # same sparse-dense call as torch.mm, so equal to the last bit; 140 columns make 5 blocks.
    rng = np.random.default_rng(6)
    projector = Projector(ANGLES, 14, 9, device="cpu")
    volume = torch.tensor(rng.random((2, 9, 70, 14), dtype=np.float32))
    blocks = projector.to_columns(volume)
    projections = projector.forward_columns(blocks)
    into = torch.full_like(projections, float("nan"))
    assert projector.forward_columns(blocks, out=into) is into
    for b in range(blocks.shape[0]):
        assert torch.equal(into[b], torch.mm(projector.matrix, blocks[b]))
    backprojected = torch.full_like(blocks, float("nan"))
    projector.adjoint_columns(projections, out=backprojected)
    assert torch.equal(backprojected, projector.adjoint_columns(projections))


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(EdxtomoInputError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(EdxtomoInputError, match="no CUDA GPU"):
        project(np.ones((4, 2, 4), np.float32), [0.0], device="cuda")


def test_bad_input():
    volume = np.ones((6, 2, 8), np.float32)
    with pytest.raises(EdxtomoInputError, match="3 tilt angles given for 2 projections"):
        backproject(np.ones((2, 2, 8), np.float32), [0.0, 1.0, 2.0])
    with pytest.raises(EdxtomoInputError, match="must be 3D"):
        project(np.ones((6, 8)), [0.0])
    with pytest.raises(EdxtomoInputError, match="empty"):
        project(np.ones((6, 0, 8)), [0.0])
    with pytest.raises(EdxtomoInputError, match="non-empty 1D"):
        project(volume, [])
    with pytest.raises(EdxtomoInputError, match="non-finite"):
        project(volume, [0.0, np.nan])
    with pytest.raises(EdxtomoInputError, match="expected shape"):
        Projector([0.0], 8, 6, device="cpu").forward(torch.ones(1, 5, 2, 8))
