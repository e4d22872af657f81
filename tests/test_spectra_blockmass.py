"""Spectra sources and the surrogate off-diagonal block mass."""

import numpy as np
import pytest
from scipy.special import expit

from pifskit import PifsError
from pifskit.blockmass import block_mass, offdiag_block_mass, patch_overlap_weights
from pifskit.spectra import Spectrum, digits, from_data, from_file, from_images_fourier, parse_spectrum, powerlaw


def test_powerlaw_normalisation_and_shape():
    sp = powerlaw(16, 3, 2.0, 0.205)
    assert sp.d == 16 * 16 * 3
    assert sp.pixel_variance == pytest.approx(0.205, rel=1e-12)
    assert (np.diff(sp.eigenvalues) <= 0).all()
    vals, counts = sp.unique
    assert counts.sum() == sp.d and (counts % 3 == 0).all()
    # DC and the four |k| = 1 modes share the top value
    assert counts[0] == 5 * 3
    # power law: ratio between |k| = 1 and |k| = 2 modes is 2^exponent
    grid = sp.power_grid
    assert grid[0, 1] / grid[0, 2] == pytest.approx(4.0)


def test_from_data_matches_covariance_eigenvalues(rng):
    X = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 6))
    ref = np.sort(np.linalg.eigvalsh(np.cov(X.T)))[::-1]
    np.testing.assert_allclose(from_data(X).eigenvalues, ref, rtol=1e-10, atol=1e-12)
    # n < d: Gram side, zeros fill up to d
    Y = rng.standard_normal((5, 30))
    sp = from_data(Y)
    ref2 = np.sort(np.linalg.eigvalsh(np.cov(Y.T)))[::-1]
    np.testing.assert_allclose(sp.eigenvalues, np.clip(ref2, 0, None), atol=1e-10)
    assert sp.d == 30 and (sp.eigenvalues[4:] == 0).all()


def test_fourier_estimate_of_stationary_field(rng):
    # circularly stationary Gaussian field with a known spectrum: the Fourier estimate recovers it
    grid = powerlaw(8, 1, 2.0, 1.0).power_grid
    n = 4000
    white = rng.standard_normal((n, 8, 8))
    fields = np.fft.ifft2(np.fft.fft2(white) * np.sqrt(grid)).real
    est = from_images_fourier(fields)
    np.testing.assert_allclose(est.power_grid, grid, rtol=0.12)
    # eigenvalues of the circulant covariance = the grid values
    pca = from_data(fields.reshape(n, -1))
    np.testing.assert_allclose(pca.eigenvalues[:10], np.sort(grid.ravel())[::-1][:10], rtol=0.15)


def test_files(tmp_path):
    ev = np.array([3.0, 1.0, 0.5])
    np.save(tmp_path / "e.npy", ev)
    np.savez(tmp_path / "e.npz", eigenvalues=ev)
    np.savetxt(tmp_path / "e.txt", ev)
    (tmp_path / "e.csv").write_text("3.0,1.0,0.5\n")
    for name in ("e.npy", "e.npz", "e.txt", "e.csv"):
        np.testing.assert_allclose(from_file(tmp_path / name).eigenvalues, ev)
        np.testing.assert_allclose(parse_spectrum(f"file:{tmp_path / name}").eigenvalues, ev)
    (tmp_path / "bad.txt").write_text("a b c")
    with pytest.raises(PifsError, match="cannot read"):
        from_file(tmp_path / "bad.txt")
    with pytest.raises(PifsError, match="not found"):
        from_file(tmp_path / "missing.npy")


@pytest.mark.parametrize("ev, msg", [([-1.0, 2.0], ">= 0"), ([0.0, 0.0], "no positive"), ([], "empty"),
                                     ([np.nan], "NaN"), ([np.inf], "inf")])
def test_bad_spectra(ev, msg):
    with pytest.raises(PifsError, match=msg):
        Spectrum(np.array(ev))


def test_parse_spectrum_errors():
    with pytest.raises(PifsError, match="unknown spectrum"):
        parse_spectrum("gauss")
    with pytest.raises(PifsError, match="must be a number"):
        parse_spectrum("powerlaw:x")
    with pytest.raises(PifsError, match="pixel variance"):
        parse_spectrum("powerlaw:2", 8, 1, -1.0)


def test_digits():
    pytest.importorskip("sklearn")
    sp = digits()
    assert sp.d == 64 and sp.eigenvalues[0] > 10 * sp.eigenvalues[20]


def dense_block_mass(grid, logsnr, p):
    """Reference: build the circulant Jacobian explicitly and sum squared block norms."""
    H, W = grid.shape
    a2, s2 = expit(logsnr), expit(-logsnr)
    G = grid / (a2 * grid + s2)
    n = H * W
    E = np.eye(n).reshape(n, H, W)
    J = np.fft.ifft2(np.fft.fft2(E) * G).real.reshape(n, n).T  # column j = J applied to e_j
    blocks = np.zeros((H // p * W // p,) * 2)
    idx = (np.arange(H)[:, None] // p) * (W // p) + (np.arange(W)[None, :] // p)
    idx = idx.ravel()
    for i in range(blocks.shape[0]):  # test-side reference loops
        for j in range(blocks.shape[1]):
            blocks[i, j] = (J[np.ix_(idx == i, idx == j)] ** 2).sum()
    return block_mass(blocks)


@pytest.mark.parametrize("p", [2, 4])
def test_offdiag_block_mass_equals_dense_construction(p):
    grid = powerlaw(8, 1, 2.0, 0.3).power_grid
    levels = np.array([-6.0, -1.0, 0.0, 2.0, 8.0])
    fast = offdiag_block_mass(levels, grid, p)
    ref = [dense_block_mass(grid, l, p) for l in levels]
    np.testing.assert_allclose(fast, ref, rtol=1e-10, atol=1e-12)


def test_offdiag_block_mass_two_regimes():
    grid = powerlaw(32, 1, 2.0, 0.205).power_grid
    l = np.linspace(-10, 10, 41)
    m = offdiag_block_mass(l, grid, 4)
    assert (np.diff(m) <= 1e-12).all()  # falls monotonically from high to low noise
    assert m[0] > 0.5 > m[-1]
    assert offdiag_block_mass(np.array([np.inf]), grid, 4)[0] == 0.0  # clean: identity, block diagonal
    assert np.isfinite(offdiag_block_mass(np.array([-np.inf]), grid, 4)).all()  # pure noise: finite limit


def test_patch_must_tile():
    with pytest.raises(PifsError, match="does not tile"):
        patch_overlap_weights((8, 8), 3)
    w = patch_overlap_weights((8, 8), 8)
    assert w.sum() == 64 * 64  # one patch: every pair of pixels
