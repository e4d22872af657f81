"""Exact data models: closed-form denoisers vs dense formulas, quadrature, finite differences; bad input."""

import gzip

import numpy as np
import pytest

from pifskit import PifsError
from pifskit.exact_models import GaussianMixtureModel, GaussianModel, fit_gaussian, fit_mixture_em, \
    fit_mixture_per_class, mnist_data, pca_reduce
from pifskit.datasets import load_digits  # noqa: E402
from pifskit.exact_models.fit import DIGITS_JITTER, dequantization_variance
from pifskit.schedules import a_from_logsnr, s_from_logsnr

LEVELS = [-np.inf, -6.0, -1.0, 0.0, 2.5, 9.0]


def _rot(d, rng):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q


def _dense_denoiser(mu, cov, x, l):
    a, s = float(a_from_logsnr(l)), float(s_from_logsnr(l))
    C = a * a * cov + s * s * np.eye(len(mu))
    return mu + (a * cov @ np.linalg.solve(C, (x - a * mu).T)).T


def _random_mixture(rng, K=3, d=2, spread=2.0):
    means = rng.standard_normal((K, d)) * spread
    lams = np.exp(rng.uniform(np.log(0.05), np.log(1.5), (K, d)))
    bases = np.array([_rot(d, rng) for _ in range(K)])
    w = rng.dirichlet(np.ones(K) * 2)
    return GaussianMixtureModel(w, means, lams, bases)


# -- Gaussian ------------------------------------------------------------------------------------

@pytest.mark.parametrize("l", LEVELS)
def test_gaussian_denoiser_matches_dense_formula(l):
    rng = np.random.default_rng(0)
    d = 5
    U = _rot(d, rng)
    lam = np.array([3.0, 1.0, 0.3, 0.05, 0.0])  # singular direction allowed
    mu = rng.standard_normal(d)
    g = GaussianModel(mu, lam, U)
    x = rng.standard_normal((7, d)) * 2
    cov = (U * lam) @ U.T
    np.testing.assert_allclose(g.denoise(x, l), _dense_denoiser(mu, cov, x, l), atol=1e-10)
    np.testing.assert_allclose(g.covariance(), cov, atol=1e-12)


def test_gaussian_low_rank_plus_isotropic():
    rng = np.random.default_rng(1)
    d, r, iso = 6, 2, 0.07
    W = rng.standard_normal((d, r))
    mu = rng.standard_normal(d)
    g = GaussianModel.low_rank(mu, W, iso)
    cov = W @ W.T + iso * np.eye(d)
    np.testing.assert_allclose(g.covariance(), cov, atol=1e-12)
    x = rng.standard_normal((4, d))
    for l in LEVELS:
        np.testing.assert_allclose(g.denoise(x, l), _dense_denoiser(mu, cov, x, l), atol=1e-10)
    # eigen-coordinates reproduce the spectrum and |mu|
    var, m = g.eigen_coordinates()
    np.testing.assert_allclose(np.sort(var), np.sort(np.linalg.eigvalsh(cov)), atol=1e-12)
    assert np.linalg.norm(m) == pytest.approx(np.linalg.norm(mu))


@pytest.mark.parametrize("l", [-2.0, 0.7, 5.0])
def test_gaussian_jacobian_finite_differences(l):
    rng = np.random.default_rng(2)
    g = GaussianModel.low_rank(rng.standard_normal(4), rng.standard_normal((4, 2)), 0.2)
    x = rng.standard_normal(4)
    h = 1e-6
    fd = np.array([(g.denoise(x + h * e, l) - g.denoise(x - h * e, l))[0] / (2 * h) for e in np.eye(4)]).T
    np.testing.assert_allclose(g.jacobian(x, l), fd, atol=1e-7)


def test_gaussian_sampling_moments():
    rng = np.random.default_rng(3)
    g = GaussianModel.low_rank(np.array([1.0, -2.0, 0.5]), rng.standard_normal((3, 1)), 0.3)
    X = g.sample(200_000, rng)
    np.testing.assert_allclose(X.mean(0), g.mean, atol=0.02)
    np.testing.assert_allclose(np.cov(X, rowvar=False), g.covariance(), atol=0.03)


def test_gaussian_bad_input():
    with pytest.raises(PifsError, match="positive semi-definite"):
        GaussianModel.from_covariance(np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(PifsError, match="symmetric"):
        GaussianModel.from_covariance(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(PifsError, match="orthonormal"):
        GaussianModel(np.zeros(2), [1.0, 1.0], np.array([[1.0, 1.0], [0.0, 1.0]]))
    g = GaussianModel.diagonal([1.0, 2.0])
    with pytest.raises(PifsError, match=r"shape \(B, 2\)"):
        g.denoise(np.zeros((3, 5)), 0.0)
    with pytest.raises(PifsError):
        g.denoise(np.zeros((3, 2)), np.nan)
    with pytest.raises(PifsError):
        GaussianModel(np.zeros(0), [])


# -- mixture -------------------------------------------------------------------------------------

def _quadrature_posterior_mean(mix, xt, l, half_width=9.0, n=801):
    """E[x0 | x_t] by brute-force 2-D quadrature of x0 p(x0) N(x_t; a x0, s^2 I)."""
    a, s = float(a_from_logsnr(l)), float(s_from_logsnr(l))
    g = np.linspace(-half_width, half_width, n)
    G = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    logp = mix.log_prob(G)  # clean density
    out = []
    for x in xt:
        logw = logp - 0.5 * ((x - a * G) ** 2).sum(1) / (s * s)
        w = np.exp(logw - logw.max())
        out.append((w[:, None] * G).sum(0) / w.sum())
    return np.array(out)


@pytest.mark.parametrize("l", [-4.0, -1.0, 0.5, 2.0])
def test_mixture_denoiser_matches_quadrature(l):
    rng = np.random.default_rng(4)
    mix = _random_mixture(rng)
    xt = mix.sample_noisy(6, l, rng)
    np.testing.assert_allclose(mix.denoise(xt, l), _quadrature_posterior_mean(mix, xt, l), atol=2e-6)


def test_mixture_denoiser_matches_importance_sampling():
    """Self-normalised importance sampling from the prior: agrees within 5 Monte-Carlo standard errors."""
    rng = np.random.default_rng(5)
    mix = _random_mixture(rng)
    l = -0.5
    a, s = float(a_from_logsnr(l)), float(s_from_logsnr(l))
    x0 = mix.sample(400_000, rng)
    for xt in mix.sample_noisy(3, l, rng):
        logw = -0.5 * ((xt - a * x0) ** 2).sum(1) / s**2
        w = np.exp(logw - logw.max())
        w /= w.sum()
        est = w @ x0
        se = np.sqrt((w[:, None] ** 2 * (x0 - est) ** 2).sum(0))
        exact = mix.denoise(xt, l)[0]
        assert (np.abs(exact - est) < 5 * se + 1e-9).all(), (exact, est, se)


def test_single_component_mixture_equals_gaussian():
    rng = np.random.default_rng(6)
    g = GaussianModel(rng.standard_normal(4), [2.0, 1.0, 0.5, 0.1], _rot(4, rng))
    mix = GaussianMixtureModel.from_gaussian(g)
    x = rng.standard_normal((5, 4))
    for l in LEVELS:
        np.testing.assert_allclose(mix.denoise(x, l), g.denoise(x, l), atol=1e-10)


@pytest.mark.parametrize("l", [-3.0, 0.0, 1.5, 4.0])
def test_mixture_jacobian_finite_differences(l):
    rng = np.random.default_rng(7)
    mix = _random_mixture(rng, K=4, d=3, spread=1.0)
    x = mix.sample_noisy(3, l, rng)
    J = mix.jacobian(x, l)
    h = 1e-6
    for b in range(x.shape[0]):
        fd = np.array([(mix.denoise(x[b] + h * e, l) - mix.denoise(x[b] - h * e, l))[0] / (2 * h)
                       for e in np.eye(3)]).T
        np.testing.assert_allclose(J[b], fd, atol=1e-6, rtol=1e-5)


def test_mixture_jacobian_is_tweedie_posterior_covariance():
    """dD/dx = (a / s^2) Cov[x0 | x_t] (checked by quadrature in 2-D)."""
    rng = np.random.default_rng(8)
    mix = _random_mixture(rng)
    l = 0.3
    a, s = float(a_from_logsnr(l)), float(s_from_logsnr(l))
    x = mix.sample_noisy(1, l, rng)[0]
    g = np.linspace(-9, 9, 801)
    G = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    logw = mix.log_prob(G) - 0.5 * ((x - a * G) ** 2).sum(1) / s**2
    w = np.exp(logw - logw.max())
    w /= w.sum()
    m = w @ G
    cov = (w[:, None] * (G - m)).T @ (G - m)
    np.testing.assert_allclose(mix.jacobian(x, l)[0], a / s**2 * cov, atol=1e-5)


def test_mixture_stable_at_extreme_levels():
    rng = np.random.default_rng(9)
    mix = _random_mixture(rng, K=5, d=4)
    x = rng.standard_normal((50, 4)) * 3
    # pure noise: responsibilities are the prior weights, D = prior mean
    np.testing.assert_allclose(mix.responsibilities(x, -np.inf), np.tile(mix.weights, (50, 1)), atol=1e-15)
    np.testing.assert_allclose(mix.denoise(x, -np.inf), np.tile(mix.weights @ mix.means, (50, 1)), atol=1e-12)
    np.testing.assert_allclose(mix.denoise(x, -80.0), mix.denoise(x, -np.inf), atol=1e-12)
    # almost clean: D(x) -> x / a for x near the data
    x0 = mix.sample(50, rng)
    l = 40.0
    xt = mix.sample_noisy(50, l, rng)
    np.testing.assert_allclose(mix.denoise(xt, l), xt / a_from_logsnr(l), atol=1e-6)
    assert np.isfinite(mix.denoise(np.full((2, 4), 1e6), 12.0)).all()
    assert np.isfinite(mix.jacobian(x0[:3], 30.0)).all()
    R = mix.responsibilities(x, 3.0)
    np.testing.assert_allclose(R.sum(1), 1.0)


def test_mixture_sampling_moments():
    rng = np.random.default_rng(10)
    mix = _random_mixture(rng, K=3, d=3, spread=1.0)
    X, lab = mix.sample(300_000, rng, return_labels=True)
    m, C = mix.moments()
    np.testing.assert_allclose(X.mean(0), m, atol=0.02)
    np.testing.assert_allclose(np.cov(X, rowvar=False), C, atol=0.03)
    np.testing.assert_allclose(np.bincount(lab, minlength=3) / len(lab), mix.weights, atol=0.005)


def test_mixture_chunked_batches_match():
    from pifskit.exact_models import mixture as mx

    rng = np.random.default_rng(11)
    mix = _random_mixture(rng, K=3, d=4)
    x = rng.standard_normal((1000, 4))
    full = mix.denoise(x, 0.3)
    old = mx._CHUNK_ELEMS
    try:
        mx._CHUNK_ELEMS = 12 * 7  # 7 rows per chunk
        # BLAS may block a matmul differently per chunk size: equal to rounding, not bitwise
        np.testing.assert_allclose(mix.denoise(x, 0.3), full, rtol=1e-12, atol=1e-14)
    finally:
        mx._CHUNK_ELEMS = old


def test_mixture_bad_input():
    rng = np.random.default_rng(12)
    bad = np.array([[[1.0, 0.0], [0.0, -0.5]]])
    with pytest.raises(PifsError, match="positive semi-definite"):
        GaussianMixtureModel.from_covariances([1.0], np.zeros((1, 2)), bad)
    sing = np.array([[[1.0, 1.0], [1.0, 1.0]]])
    with pytest.raises(PifsError, match="singular.*jitter"):
        GaussianMixtureModel.from_covariances([1.0], np.zeros((1, 2)), sing)
    m = GaussianMixtureModel.from_covariances([1.0], np.zeros((1, 2)), sing, jitter=1e-3)
    assert m.eigenvalues.min() == pytest.approx(1e-3)
    with pytest.raises(PifsError, match="sum to 1"):
        GaussianMixtureModel([0.5, 0.2], np.zeros((2, 2)), np.ones((2, 2)), np.tile(np.eye(2), (2, 1, 1)))
    with pytest.raises(PifsError, match="same number of components"):
        GaussianMixtureModel([1.0], np.zeros((2, 2)), np.ones((2, 2)), np.tile(np.eye(2), (2, 1, 1)))
    with pytest.raises(PifsError, match="positive definite"):
        GaussianMixtureModel([1.0], np.zeros((1, 2)), np.array([[1.0, 0.0]]), np.eye(2)[None])
    mix = _random_mixture(rng)
    with pytest.raises(PifsError, match="shape"):
        mix.denoise(np.zeros((4, 3)), 0.0)


# -- fitting -------------------------------------------------------------------------------------

def test_fit_per_class_recovers_components():
    rng = np.random.default_rng(13)
    true = _random_mixture(rng, K=3, d=2, spread=4.0)
    X, y = true.sample(60_000, rng, return_labels=True)
    fit = fit_mixture_per_class(X, y)
    np.testing.assert_allclose(fit.weights, true.weights, atol=0.01)
    np.testing.assert_allclose(fit.means, true.means, atol=0.03)
    for k in range(3):
        np.testing.assert_allclose(fit.component(k).covariance(), true.component(k).covariance(), atol=0.05)


def test_fit_em_and_gaussian():
    rng = np.random.default_rng(14)
    true = _random_mixture(rng, K=2, d=2, spread=6.0)
    X = true.sample(5000, rng)
    em = fit_mixture_em(X, 2, seed=0)
    assert em.K == 2 and em.d == 2
    order = np.argsort(em.means[:, 0])
    np.testing.assert_allclose(em.means[order], true.means[np.argsort(true.means[:, 0])], atol=0.15)
    g = fit_gaussian(X)
    np.testing.assert_allclose(g.covariance(), np.cov(X, rowvar=False), atol=1e-10)


def test_fit_digits_needs_jitter():
    X, y = load_digits().rows()
    assert X.shape == (1797, 64) and X.min() == -1.0 and X.max() == 1.0
    with pytest.raises(PifsError, match="singular"):
        fit_mixture_per_class(X, y)
    mix = fit_mixture_per_class(X, y, jitter=DIGITS_JITTER)
    assert mix.K == 10 and mix.eigenvalues.min() == pytest.approx(DIGITS_JITTER)
    assert DIGITS_JITTER == pytest.approx(0.125**2 / 12)
    assert dequantization_variance(256) == pytest.approx((2 / 255) ** 2 / 12)


def test_pca_reduce_keeps_variance_units():
    rng = np.random.default_rng(15)
    X = rng.standard_normal((500, 10)) * np.arange(1, 11)
    Z, pca = pca_reduce(X, 3)
    np.testing.assert_allclose(Z.var(0, ddof=1), pca.variances, rtol=1e-10)
    np.testing.assert_allclose(pca.variances, np.sort(np.linalg.eigvalsh(np.cov(X, rowvar=False)))[::-1][:3])
    with pytest.raises(PifsError):
        pca_reduce(X, 11)


def test_fit_bad_input():
    with pytest.raises(PifsError, match="empty"):
        fit_gaussian(np.zeros((0, 3)))
    with pytest.raises(PifsError, match="labels must have shape"):
        fit_mixture_per_class(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(PifsError, match=">= 2 samples"):
        fit_mixture_per_class(np.random.default_rng(0).standard_normal((5, 2)), np.array([0, 0, 0, 0, 1]))


def _write_idx(path, arr, code):
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(">u1").tobytes())


def test_mnist_reader_on_tiny_generated_files(tmp_path):
    rng = np.random.default_rng(16)
    imgs = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labs = np.arange(12, dtype=np.uint8) % 3
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs, 0x08)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labs, 0x08)
    X, y = mnist_data(tmp_path, verify=False)
    assert X.shape == (12, 784)
    np.testing.assert_allclose(X, imgs.reshape(12, -1) / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(y, labs)
    with pytest.raises(PifsError):
        mnist_data(tmp_path / "missing")
