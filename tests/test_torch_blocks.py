"""pifskit.torch.blocks: exact block norms, probe estimators (mean and stated variance), Gaussian floor."""

import numpy as np
import pytest
import torch

from pifskit import PifsError
from pifskit.blockmass import block_mass, offdiag_block_mass
from pifskit.spectra import powerlaw_grid
from pifskit.torch.blocks import (
    Partition,
    block_norms,
    block_norms_from_jacobian,
    estimate_block_row_sums,
    full_jacobian,
    gaussian_block_row_sums,
    probe_block_frob2,
)


pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _linear(A):
    At = torch.as_tensor(A)

    def fn(x):
        B = x.shape[0]
        return (x.reshape(B, -1) @ At.T).reshape(x.shape)

    return fn


def _numpy_blocks(A, part):
    idx = part.index.numpy()
    P = idx.shape[0]
    spec = np.array([[np.linalg.norm(A[np.ix_(idx[i], idx[j])], 2) for j in range(P)] for i in range(P)])
    frob = np.array([[np.linalg.norm(A[np.ix_(idx[i], idx[j])]) for j in range(P)] for i in range(P)])
    return spec, frob


def test_patch_partition_layout():
    part = Partition.patches((2, 4, 6), 2)
    assert part.n_blocks == 6 and part.block_size == 8
    img = torch.arange(48).reshape(2, 4, 6)
    # block 4 = patch row 1, patch col 1: rows 2..3, cols 2..3, both channels
    expect = torch.cat([img[c, 2:4, 2:4].reshape(-1) for c in range(2)]).sort().values
    assert torch.equal(part.index[4].sort().values, expect)
    assert torch.equal(part.index.reshape(-1).sort().values, torch.arange(48))
    with pytest.raises(PifsError, match="does not tile"):
        Partition.patches((1, 8, 8), 3)
    with pytest.raises(PifsError, match="C x H x W"):
        Partition.patches((8,), 2)
    tok = Partition.tokens((5, 3))
    assert tok.n_blocks == 5 and torch.equal(tok.index[2], torch.tensor([6, 7, 8]))


def test_exact_block_norms_of_a_linear_map():
    rng = np.random.default_rng(0)
    part = Partition.patches((2, 4, 4), 2)
    A = rng.normal(size=(32, 32))
    x = torch.zeros(2, 4, 4, dtype=torch.float64)
    for mode in ("forward", "reverse"):
        J = full_jacobian(_linear(A), x, mode)
        np.testing.assert_allclose(J.numpy(), A, atol=1e-12)
    bn = block_norms(_linear(A), x, part)
    spec, frob = _numpy_blocks(A, part)
    np.testing.assert_allclose(bn.spectral, spec, rtol=1e-10)
    np.testing.assert_allclose(bn.frobenius, frob, rtol=1e-10)
    assert bn.block_max == pytest.approx(spec.sum(1).max(), rel=1e-10)
    assert bn.offdiag_mass == pytest.approx(1 - np.trace(frob**2) / (frob**2).sum(), rel=1e-10)
    assert bn.offdiag_mass == pytest.approx(block_mass(frob**2))
    # chunked forward Jacobian agrees
    J2 = full_jacobian(_linear(A), x, "forward", chunk_size=5)
    np.testing.assert_allclose(J2.numpy(), A, atol=1e-12)


def _stationary_denoiser(grid, l, C):
    a2, s2 = 1 / (1 + np.exp(-l)), 1 / (1 + np.exp(l))
    G = torch.as_tensor(np.sqrt(a2) * grid / (a2 * grid + s2))

    def fn(x):
        return torch.fft.ifft2(torch.fft.fft2(x) * G).real

    return fn


@pytest.mark.parametrize("patch,C", [(2, 1), (4, 2), (8, 1)])
def test_gaussian_floor_and_surrogate_mass_match_the_exact_convolution(patch, C):
    grid = powerlaw_grid(8, 2.0, 0.3)
    part = Partition.patches((C, 8, 8), patch)
    x = torch.zeros(C, 8, 8, dtype=torch.float64)
    levels = np.array([-3.0, 0.0, 2.0])
    spec = gaussian_block_row_sums(levels, grid, patch, "spectral")
    fro = gaussian_block_row_sums(levels, grid, patch, "fro", channels=C)
    surrogate = offdiag_block_mass(levels, grid, patch)
    for n, l in enumerate(levels):
        bn = block_norms(_stationary_denoiser(grid, l, C), x, part)
        assert bn.block_max == pytest.approx(spec[n], rel=1e-9)
        assert bn.block_max_frob == pytest.approx(fro[n], rel=1e-9)
        np.testing.assert_allclose(bn.row_sums, bn.row_sums[0], rtol=1e-9)  # stationarity
        assert bn.offdiag_mass == pytest.approx(surrogate[n], abs=1e-9)


def test_probe_estimator_is_unbiased_with_the_stated_variance():
    rng = np.random.default_rng(1)
    part = Partition.patches((1, 4, 4), 2)
    A = rng.normal(size=(16, 16)) * rng.uniform(0.1, 2, size=(16, 1))
    fn = _linear(A)
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    n = 4000
    est, var = probe_block_frob2(fn, x, part, torch.arange(4), n_probes=n, generator=torch.Generator().manual_seed(0))
    idx = part.index.numpy()
    true = np.array([[np.linalg.norm(A[np.ix_(idx[i], idx[j])]) ** 2 for j in range(4)] for i in range(4)])
    stated = np.array([[2 * np.linalg.norm(A[np.ix_(idx[i], idx[j])].T @ A[np.ix_(idx[i], idx[j])]) ** 2
                        for j in range(4)] for i in range(4)])
    z = (est[0].numpy() - true) / np.sqrt(stated / n)
    assert np.abs(z).max() < 4.5
    # the per-probe sample variance reproduces the stated variance 2 ||J^T J||_F^2
    np.testing.assert_allclose(var[0].numpy() * n, stated, rtol=0.2)
    # the row-sum estimator with all blocks probed converges to the Frobenius row sums
    rho, se = estimate_block_row_sums(fn, x, part, n_probes=n, generator=torch.Generator().manual_seed(2))
    np.testing.assert_allclose(rho[0].numpy(), np.sqrt(true).sum(1), rtol=0.02)
    assert float(se.abs().max()) == 0.0


def test_subset_row_sum_estimator_mean_and_standard_error():
    rng = np.random.default_rng(3)
    part = Partition.patches((1, 8, 8), 2)  # 16 blocks
    A = rng.normal(size=(64, 64)) * 0.1 + np.eye(64)
    fn = _linear(A)
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    bn = block_norms(fn, x[0], part)
    reps = 400
    gen = torch.Generator().manual_seed(4)
    xs = x.expand(reps, 1, 8, 8)  # independent subsets and probes per batch row
    rho, se = estimate_block_row_sums(fn, xs, part, n_blocks=4, n_probes=64, generator=gen)
    mean = rho.mean(0).numpy()
    std = rho.std(0).numpy()
    target = bn.frob_row_sums
    # unbiased over subsets (probe bias ~ 1/(4 n r) < 0.1 %), within 4 standard errors of the mean
    assert np.all(np.abs(mean - target) < 4 * std / np.sqrt(reps) + 0.01 * target)
    # the reported variance (se^2, unbiased for the subset-sampling variance) matches the spread over draws
    np.testing.assert_allclose((se**2).mean(0).numpy(), std**2, rtol=0.3)


def test_block_errors():
    part = Partition.patches((1, 4, 4), 2)
    with pytest.raises(PifsError, match="partition covers"):
        block_norms(lambda v: v, torch.zeros(1, 8, 8), part)
    with pytest.raises(PifsError, match="Jacobian is"):
        block_norms_from_jacobian(torch.zeros(5, 5), part)
    with pytest.raises(PifsError, match="n_blocks"):
        estimate_block_row_sums(lambda v: v, torch.zeros(1, 1, 4, 4), part, n_blocks=5)
    with pytest.raises(PifsError, match="does not tile"):
        gaussian_block_row_sums([0.0], np.ones((6, 6)), 4)


def test_jvp_and_double_backward_probes_agree_on_a_nonlinear_model():
    from pifskit.torch.testing import tiny_dit

    model, _ = tiny_dit(seed=2, size=4, patch=2, dim=16, depth=1)
    model = model.double()
    part = Partition.patches((1, 4, 4), 2)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fn = lambda v: model(v, torch.full((v.shape[0],), 300.0, dtype=v.dtype))
    cols = torch.tensor([[0, 3], [1, 2], [2, 2]])
    a, _ = probe_block_frob2(fn, x, part, cols, 3, torch.Generator().manual_seed(1), method="jvp")
    b, _ = probe_block_frob2(fn, x, part, cols, 3, torch.Generator().manual_seed(1), method="double_backward")
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and both equal the exact ||J_ij z||^2 means: compare with the full Jacobian of sample 0
    J = full_jacobian(fn, x[0])
    bn = block_norms_from_jacobian(J, part)
    est, _ = probe_block_frob2(fn, x[:1], part, torch.arange(4), 3000, torch.Generator().manual_seed(3))
    np.testing.assert_allclose(est[0].numpy(), bn.frobenius**2, rtol=0.15, atol=1e-6)
