"""Metrics: closed-form Gaussian W2/KL vs Monte Carlo and dense formulas; the theory check of section 6.III;
sliced W2, unbiased MMD^2 and mode coverage on known cases."""

import numpy as np
import pytest
from scipy.linalg import sqrtm

from pifskit import PifsError, get_schedule, make_chain
from pifskit.exact_models import GaussianMixtureModel, GaussianModel
from pifskit.geometry import expansion_function
from pifskit.metrics import (GaussianOutput, gaussian_kl, gaussian_moments_from_samples, gaussian_output_moments,
                             gaussian_w2, gaussian_w2_from_samples, mmd2_unbiased, mode_coverage, sliced_w2)
from pifskit.samplers import get_sampler, initial_noise, sample_ddim


def _rotated_gaussian(seed=0, d=6):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((d, d)))[0]
    lam = np.logspace(0.5, -2.5, d)
    return GaussianModel(rng.standard_normal(d) * 0.5, lam, U)


# -- THEORY CHECK (theory.md section 6.III) ------------------------------------------------------

@pytest.mark.parametrize("spacing", ["trailing", "leading", "karras", "logsnr", "ays-sd15"])
def test_theory_ddim_output_std_is_r0_prod_cos(spacing):
    """DDIM from the exact marginal: std along u_k = r_0(lambda_k) prod_i cos(Delta psi_i(lambda_k)),
    and = r_T prod_i f_t(lambda_k) with the geometry module's expansion function."""
    lam = np.logspace(-4, 1.5, 40)
    g = GaussianModel.diagonal(lam)
    chain = make_chain(get_schedule("sd"), 10, spacing)
    out = gaussian_output_moments(g, sample_ddim, chain, start="marginal")
    a, s = chain.a, chain.s
    psi = np.arctan2(s[:, None], a[:, None] * np.sqrt(lam)[None, :])  # psi_t(lambda) = atan(s / (a sqrt(lambda)))
    prod_cos = np.prod(np.cos(psi[:-1] - psi[1:]), axis=0)
    r = np.sqrt(a[:, None] ** 2 * lam + s[:, None] ** 2)
    np.testing.assert_allclose(np.sqrt(out.var), r[-1] * prod_cos, rtol=1e-10)
    np.testing.assert_allclose(np.sqrt(out.var), r[0] * np.prod(expansion_function(chain, lam), axis=0), rtol=1e-10)
    assert (prod_cos <= 1.0).all()
    # ... and the W2 of that output is the surrogate's closed form sum r_0^2 (1 - prod cos)^2
    assert gaussian_w2(out) == pytest.approx(np.sqrt(np.sum(lam * (1 - prod_cos) ** 2)), rel=1e-10)


def test_theory_pure_noise_chain_with_prior_start():
    """From pure noise the N(0, I) prior is the exact marginal: std = sqrt(lambda) prod cos(Delta psi)."""
    lam = np.logspace(-3, 1, 12)
    g = GaussianModel.diagonal(lam)
    chain = make_chain(get_schedule("cosine"), 12, "uniform")
    assert chain.starts_from_noise and chain.lands_clean
    out = gaussian_output_moments(g, sample_ddim, chain, start="prior")
    phi_psi = np.arctan2(chain.s[:, None], chain.a[:, None] * np.sqrt(lam))
    prod_cos = np.prod(np.cos(phi_psi[:-1] - phi_psi[1:]), axis=0)
    np.testing.assert_allclose(np.sqrt(out.var), np.sqrt(lam) * prod_cos, rtol=1e-10)


def test_theory_matches_design_surrogate_if_available():
    from pifskit.design import steps
    from pifskit.spectra import Spectrum

    lam = np.logspace(-3, 1, 30)
    chain = make_chain(get_schedule("sd"), 10, "karras")
    out = gaussian_output_moments(GaussianModel.diagonal(lam), sample_ddim, chain, start="marginal")
    assert steps.w2_surrogate(chain, Spectrum(lam)) == pytest.approx(gaussian_w2(out), rel=1e-8)


# -- closed form vs Monte Carlo ------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["ddim", "ddim:1", "ddim:0.5", "heun", "dpmpp2m"])
def test_closed_form_moments_match_monte_carlo(spec):
    from pifskit.samplers import parse_sampler

    label, fn, opts = parse_sampler(spec)
    g = _rotated_gaussian()
    chain = make_chain(get_schedule("sd"), 8, "trailing")
    n = 20_000
    x = initial_noise(chain, n, g.d, 1)
    X = fn(g.denoise, x, chain, rng=np.random.default_rng(2), **opts)
    exact = gaussian_output_moments(g, fn, chain, **opts)
    mc = gaussian_moments_from_samples(g, X)
    se_m = np.sqrt(exact.var / n)
    se_v = exact.var * np.sqrt(2 / (n - 1))
    assert (np.abs(mc.mean - exact.mean) < 5 * se_m).all()
    assert (np.abs(mc.var - exact.var) < 5 * se_v).all()
    # the Monte-Carlo W2 (bootstrap CI) contains the closed form
    w2 = gaussian_w2_from_samples(g, X, n_boot=100, rng=3)
    assert w2.ci_low <= gaussian_w2(exact) <= w2.ci_high, (w2, gaussian_w2(exact))


def test_w2_and_kl_match_dense_formulas():
    rng = np.random.default_rng(4)
    d = 5
    out = GaussianOutput(rng.standard_normal(d), rng.uniform(0.1, 2, d), rng.standard_normal(d), rng.uniform(0.1, 2, d))
    S1, S2 = np.diag(out.var), np.diag(out.data_var)
    dm = out.mean - out.data_mean
    r2 = sqrtm(S2)
    w2sq = dm @ dm + np.trace(S1 + S2 - 2 * sqrtm(r2 @ S1 @ r2)).real
    assert gaussian_w2(out) == pytest.approx(np.sqrt(w2sq), rel=1e-10)
    kl = 0.5 * (np.trace(np.linalg.solve(S2, S1)) - d + dm @ np.linalg.solve(S2, dm)
                + np.log(np.linalg.det(S2) / np.linalg.det(S1)))
    assert gaussian_kl(out) == pytest.approx(kl, rel=1e-10)
    same = GaussianOutput(out.data_mean, out.data_var, out.data_mean, out.data_var)
    assert gaussian_w2(same) == 0.0 and gaussian_kl(same) == 0.0
    sing = GaussianOutput(np.zeros(2), np.array([1.0, 0.1]), np.zeros(2), np.array([1.0, 0.0]))
    assert gaussian_kl(sing) == np.inf


def test_exact_sampler_error_vanishes_with_steps():
    g = _rotated_gaussian(5)
    errs = [gaussian_w2(gaussian_output_moments(g, get_sampler("heun"), make_chain(get_schedule("cosine"), N, "uniform")))
            for N in (10, 40, 160)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.02


# -- mixtures ------------------------------------------------------------------------------------

def test_sliced_w2_known_values():
    rng = np.random.default_rng(6)
    # 1-D: equals the exact empirical W2 between sorted samples
    x, y = rng.standard_normal((500, 1)), rng.standard_normal((500, 1)) + 0.3
    sw = sliced_w2(x, y, n_projections=4, n_boot=20, rng=0)
    assert sw.value == pytest.approx(np.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2)), rel=1e-12)
    # pure mean shift m in d dims: SW2 -> |m| / sqrt(d) (E (u.m)^2 = |m|^2 / d)
    d, n = 8, 4000
    m = np.full(d, 0.5)
    X, Y = rng.standard_normal((n, d)), rng.standard_normal((n, d)) + m
    sw = sliced_w2(X, Y, n_projections=256, n_boot=10, rng=1)
    assert sw.value == pytest.approx(np.linalg.norm(m) / np.sqrt(d), rel=0.05)
    assert sw.ci_low < sw.value < sw.ci_high


def test_sliced_w2_bootstrap_replicate_equals_resorted_resample():
    """The np.repeat bootstrap replicate equals sorting an explicit resample (same rows in both sets)."""
    from pifskit import metrics

    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((50, 3)), rng.standard_normal((50, 3))
    _, reps = metrics.sliced_w2_replicates(X, Y, n_projections=5, n_boot=2, rng=np.random.default_rng(8))
    r2 = np.random.default_rng(8)
    P = r2.standard_normal((3, 5))
    P /= np.linalg.norm(P, axis=0)
    ix, iy = r2.integers(0, 50, 50), r2.integers(0, 50, 50)
    direct = np.sqrt(np.mean((np.sort(X[ix] @ P, 0) - np.sort(Y[iy] @ P, 0)) ** 2))
    assert reps[0] == pytest.approx(direct, rel=1e-12)


def test_mmd2_unbiased_formula_and_behaviour():
    rng = np.random.default_rng(10)
    X, Y = rng.standard_normal((40, 2)), rng.standard_normal((40, 2)) + 1.0
    h = 1.3
    k = lambda A, B: np.exp(-((A[:, None] - B[None]) ** 2).sum(-1) / (2 * h * h))
    n = 40
    off = ~np.eye(n, dtype=bool)
    brute = k(X, X)[off].mean() + k(Y, Y)[off].mean() - (k(X, Y)[off].mean() + k(Y, X)[off].mean())
    assert mmd2_unbiased(X, Y, bandwidth=h, n_boot=5, rng=0).value == pytest.approx(brute, rel=1e-12)
    # unbiased: the average over independent same-distribution pairs is ~0 (within 4 standard errors)
    vals = [mmd2_unbiased(rng.standard_normal((200, 3)), rng.standard_normal((200, 3)), bandwidth=1.5, n_boot=2,
                          rng=i).value for i in range(40)]
    assert abs(np.mean(vals)) < 4 * np.std(vals) / np.sqrt(len(vals))
    diff = mmd2_unbiased(rng.standard_normal((1000, 3)), rng.standard_normal((1000, 3)) + 0.5, n_boot=50, rng=1)
    assert diff.ci_low > 0


def test_mode_coverage():
    rng = np.random.default_rng(11)
    K, d = 3, 2
    mix = GaussianMixtureModel([0.5, 0.3, 0.2], np.array([[-6.0, 0], [0, 6.0], [6.0, 0]]), np.full((K, d), 0.5),
                               np.tile(np.eye(d), (K, 1, 1)))
    tv, mass = mode_coverage(mix, mix.sample(20_000, rng), n_boot=50, rng=0)
    assert tv.value < 0.02 and tv.ci_low <= tv.value <= tv.ci_high
    only0 = mix.component(0).sample(5000, rng)
    tv0, mass0 = mode_coverage(mix, only0, n_boot=20, rng=0)
    assert tv0.value == pytest.approx(0.5, abs=1e-6)  # 1 - w_0
    np.testing.assert_allclose(mass0, [1, 0, 0], atol=1e-6)


def test_metric_bad_input():
    g = GaussianModel.diagonal([1.0, 1.0])
    with pytest.raises(PifsError, match="dimensions differ"):
        sliced_w2(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(PifsError, match=">= 2 samples"):
        mmd2_unbiased(np.zeros((1, 2)), np.zeros((5, 2)))
    with pytest.raises(PifsError, match="start distribution"):
        gaussian_output_moments(g, sample_ddim, make_chain(get_schedule("sd"), 3, "trailing"), start="foo")
    with pytest.raises(PifsError, match="GaussianModel"):
        gaussian_output_moments("x", sample_ddim, make_chain(get_schedule("sd"), 3, "trailing"))
    mix = GaussianMixtureModel([1.0], np.zeros((1, 2)), np.ones((1, 2)), np.eye(2)[None])
    with pytest.raises(PifsError):
        mode_coverage(mix, np.zeros((3, 4)))


def test_sliced_w2_paired_difference():
    from pifskit.metrics import sliced_w2_difference

    rng = np.random.default_rng(12)
    Y = rng.standard_normal((2000, 4))
    Xa = rng.standard_normal((2000, 4)) * 1.2
    Xb = Xa * 0.9  # paired rows
    d = sliced_w2_difference(Xa, Xb, Y, n_projections=64, n_boot=30, rng=5)
    sa = sliced_w2(Xa, Y, n_projections=64, n_boot=2, rng=5).value
    sb = sliced_w2(Xb, Y, n_projections=64, n_boot=2, rng=5).value
    assert d.value == pytest.approx(sa - sb, rel=1e-12)  # same projections (same rng draw)
    assert d.ci_low < d.value < d.ci_high and d.ci_low > 0  # Xb (std 1.08) is nearer N(0, I) than Xa (1.2)
    same = sliced_w2_difference(Xa, Xa, Y, n_projections=16, n_boot=10, rng=0)
    assert same.value == same.ci_low == same.ci_high == 0.0
    with pytest.raises(PifsError, match="same shape"):
        sliced_w2_difference(Xa, Xa[:10], Y)


# -- the vectorised bootstraps equal the per-replicate definitions (same RNG stream) ---------------

def _naive_ci(est, reps, level=0.95):
    from scipy.stats import norm

    half = norm.ppf(0.5 + 0.5 * level) * np.std(reps, ddof=1)
    return est - half, est + half


def test_vectorised_bootstraps_equal_per_replicate_definitions():
    """Each metric's interval equals the one computed replicate by replicate from explicit resamples,
    drawing ``rng.integers(0, n, n)`` per resample in the order of the pre-vectorisation code."""
    from pifskit.exact_models import GaussianMixtureModel
    from pifskit.metrics import sliced_w2_difference

    rng = np.random.default_rng(21)
    n, d, L, B = 60, 4, 7, 6
    X, Xb, Y = rng.standard_normal((n, d)), rng.standard_normal((n, d)) * 1.2, rng.standard_normal((n, d)) + 0.2
    # sliced W2: P first, then per replicate a resample of X's rows and one of Y's
    r = np.random.default_rng(3)
    P = r.standard_normal((d, L))
    P /= np.linalg.norm(P, axis=0)

    def sw(A, C):
        return np.sqrt(np.mean((np.sort(A @ P, 0) - np.sort(C @ P, 0)) ** 2))

    reps_a, reps_b = [], []
    for _ in range(B):
        ix, iy = r.integers(0, n, n), r.integers(0, n, n)
        reps_a.append(sw(X[ix], Y[iy]))
        reps_b.append(sw(Xb[ix], Y[iy]))
    got = sliced_w2(X, Y, n_projections=L, n_boot=B, rng=3)
    np.testing.assert_allclose([got.value, got.ci_low, got.ci_high],
                               [sw(X, Y), *_naive_ci(sw(X, Y), reps_a)], rtol=1e-12)
    diff = sliced_w2_difference(X, Xb, Y, n_projections=L, n_boot=B, rng=3)
    e = sw(X, Y) - sw(Xb, Y)
    np.testing.assert_allclose([diff.value, diff.ci_low, diff.ci_high],
                               [e, *_naive_ci(e, np.subtract(reps_a, reps_b))], rtol=1e-12, atol=1e-15)
    # MMD^2: per replicate the mean of H over pairs of distinct draws
    h = 1.3
    k = lambda A, C: np.exp(-((A[:, None] - C[None]) ** 2).sum(-1) / (2 * h * h))
    H = k(X, X) + k(Y, Y) - k(X, Y) - k(X, Y).T
    r = np.random.default_rng(4)
    reps = []
    for _ in range(B):
        idx = r.integers(0, n, n)
        reps.append(H[np.ix_(idx, idx)][idx[:, None] != idx[None, :]].mean())
    est = H[~np.eye(n, dtype=bool)].mean()
    got = mmd2_unbiased(X, Y, bandwidth=h, n_boot=B, rng=4)
    np.testing.assert_allclose([got.value, got.ci_low, got.ci_high], [est, *_naive_ci(est, reps)], rtol=1e-12)
    # mode coverage: per replicate the TV of the resampled mean responsibilities
    mix = GaussianMixtureModel([0.3, 0.7], [[0.0, 0.0], [2.0, 0.0]], np.ones((2, 2)), np.stack([np.eye(2)] * 2))
    Z = mix.sample(80, np.random.default_rng(5))
    R = mix.responsibilities(Z, np.inf)
    r = np.random.default_rng(6)
    reps = [0.5 * np.abs(R[r.integers(0, 80, 80)].mean(0) - mix.weights).sum() for _ in range(B)]
    est = 0.5 * np.abs(R.mean(0) - mix.weights).sum()
    tv, _ = mode_coverage(mix, Z, n_boot=B, rng=6)
    np.testing.assert_allclose([tv.value, tv.ci_low, tv.ci_high], [est, *_naive_ci(est, reps)], rtol=1e-12)


def test_sliced_w2_reference_reuse_equals_fresh_calls():
    """One prepared reference (Y's cached resamples) gives the numbers of separate sliced_w2 calls."""
    from pifskit.metrics import SlicedW2Reference

    rng = np.random.default_rng(30)
    Y = rng.standard_normal((40, 3))
    ref = SlicedW2Reference(Y, 9, 5, np.random.default_rng(2))
    nocache = SlicedW2Reference(Y, 9, 5, np.random.default_rng(2), cache_bytes=0)
    for shift in (0.0, 0.5):
        X = rng.standard_normal((40, 3)) + shift
        est, reps = ref.compare(X)
        est2, reps2 = nocache.compare(X)
        fresh = sliced_w2(X, Y, 9, 5, np.random.default_rng(2))
        assert est == fresh.value == est2
        np.testing.assert_array_equal(reps, reps2)
    with pytest.raises(PifsError):
        ref.compare(X[:10])
