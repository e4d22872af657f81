"""Samplers over explicit chains: identities between samplers, convergence orders, NFE, bad input."""

import numpy as np
import pytest

from pifskit import PifsError, get_schedule, make_chain
from pifskit.chains import Chain
from pifskit.exact_models import GaussianMixtureModel, GaussianModel
from pifskit.metrics import gaussian_output_moments
from pifskit.samplers import (SAMPLERS, ddim_noise_std, get_sampler, initial_noise, parse_sampler, sample_ddim,
                              sample_dpmpp_2m, sample_euler, sample_heun, sampler_nfe)


def _mixture(seed=0, K=4, d=3):
    rng = np.random.default_rng(seed)
    bases = np.array([np.linalg.qr(rng.standard_normal((d, d)))[0] for _ in range(K)])
    return GaussianMixtureModel(np.full(K, 1.0 / K), rng.standard_normal((K, d)) * 1.5,
                                np.exp(rng.uniform(-3, 0, (K, d))), bases)


CHAINS = {
    "sd-trailing": lambda: make_chain(get_schedule("sd"), 10, "trailing"),
    "cosine-from-noise": lambda: make_chain(get_schedule("cosine"), 8, "uniform"),
    "not-clean": lambda: Chain(np.linspace(-3.0, 6.0, 7)),
    "karras": lambda: make_chain(get_schedule("sd"), 6, "karras"),
}


@pytest.mark.parametrize("chain_name", list(CHAINS))
def test_euler_equals_ddim(chain_name):
    """DDIM (eta = 0) is Euler on the probability-flow ODE in sigma: two independent implementations agree."""
    chain = CHAINS[chain_name]()
    mix = _mixture()
    x = initial_noise(chain, 64, 3, 0)
    np.testing.assert_allclose(sample_euler(mix.denoise, x, chain), sample_ddim(mix.denoise, x, chain),
                               atol=1e-10, rtol=1e-10)


def test_ddim_step_is_f_times_centered_input():
    """One DDIM step on a Gaussian multiplies (x - a_t mu) along u_k by f_t(lambda_k) (theory section 3)."""
    from pifskit.geometry import expansion_function

    lam = np.array([4.0, 1.0, 0.1, 0.001])
    mu = np.array([0.5, -1.0, 2.0, 0.0])
    g = GaussianModel.diagonal(lam, mu)
    chain = Chain(np.array([-1.0, 2.0]))
    x = np.random.default_rng(1).standard_normal((5, 4))
    out = sample_ddim(g.denoise, x, chain)
    f = expansion_function(chain, lam)[0]
    np.testing.assert_allclose(out - chain.a[1] * mu, f * (x - chain.a[0] * mu), atol=1e-12)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samplers_vectorised_over_batch(name):
    chain = CHAINS["sd-trailing"]()
    mix = _mixture(2)
    x = initial_noise(chain, 6, 3, 3)
    fn = get_sampler(name)
    full = fn(mix.denoise, x, chain)
    rows = np.vstack([fn(mix.denoise, x[i:i + 1], chain) for i in range(6)])
    np.testing.assert_allclose(full, rows, atol=1e-12)


def _w2_interior(fn, N):
    """Exact W2 (closed form) between the sampler's output and the true marginal at the last level
    of a uniform-logSNR chain from l = -4 to 8 that does not land clean (no final jump)."""
    g = GaussianModel.diagonal(np.logspace(-2, 0.5, 10), mean=np.linspace(-1, 1, 10))
    chain = Chain(np.linspace(-4.0, 8.0, N + 1))
    o = gaussian_output_moments(g, fn, chain, start="marginal")
    a, s = chain.a[-1], chain.s[-1]
    return np.sqrt(((o.mean - a * o.data_mean) ** 2).sum()
                   + ((np.sqrt(o.var) - np.sqrt(a * a * o.data_var + s * s)) ** 2).sum())


@pytest.mark.parametrize("name,order", [("ddim", 1), ("euler", 1), ("heun", 2), ("dpmpp2m", 2)])
def test_convergence_order(name, order):
    """Error halving per doubling (order 1) or quartering (order 2), measured in closed form."""
    fn = get_sampler(name)
    e = np.array([_w2_interior(fn, N) for N in (20, 40, 80, 160)])
    rates = np.log2(e[:-1] / e[1:])
    np.testing.assert_allclose(rates[-2:], order, atol=0.1)


def test_dpmpp_2m_matches_hand_computed_two_steps():
    g = GaussianModel.diagonal(np.array([2.0, 0.3]), np.array([0.4, -0.2]))
    l = np.array([-2.0, 0.5, 3.0])
    chain = Chain(l)
    x = np.array([[0.3, -1.2]])
    a, s = chain.a, chain.s
    D0 = g.denoise(x, l[0])
    h0 = 0.5 * (l[1] - l[0])
    x1 = (s[1] / s[0]) * x - a[1] * np.expm1(-h0) * D0
    D1 = g.denoise(x1, l[1])
    h1 = 0.5 * (l[2] - l[1])
    r = h0 / h1
    Dd = (1 + 1 / (2 * r)) * D1 - 1 / (2 * r) * D0
    x2 = (s[2] / s[1]) * x1 - a[2] * np.expm1(-h1) * Dd
    np.testing.assert_allclose(sample_dpmpp_2m(g.denoise, x, chain), x2, atol=1e-14)


def test_heun_single_interior_step_hand_computed():
    g = GaussianModel.diagonal(np.array([2.0, 0.3]), np.array([0.4, -0.2]))
    chain = Chain(np.array([-1.0, 1.0]))
    a, sig = chain.a, chain.sigmas
    x = np.array([[0.7, 0.1]])
    xv = x / a[0]
    d1 = (xv - g.denoise(x, -1.0)) / sig[0]
    xp = xv + (sig[1] - sig[0]) * d1
    d2 = (xp - g.denoise(a[1] * xp, 1.0)) / sig[1]
    expect = a[1] * (xv + (sig[1] - sig[0]) * 0.5 * (d1 + d2))
    np.testing.assert_allclose(sample_heun(g.denoise, x, chain), expect, atol=1e-14)


@pytest.mark.parametrize("chain_name", list(CHAINS))
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_nfe_counts_denoiser_calls(name, chain_name):
    chain = CHAINS[chain_name]()
    mix = _mixture()
    calls = []

    def den(x, l):
        calls.append(l)
        assert np.isfinite(x).all()
        return mix.denoise(x, l)

    out = get_sampler(name)(den, initial_noise(chain, 4, 3, 0), chain, rng=0)
    assert np.isfinite(out).all()
    assert len(calls) == sampler_nfe(name, chain)


def test_pure_noise_first_step_is_exact_limit():
    """From l = -inf every sampler's first step is x_1 = s_1 x_T + a_1 D(x_T)."""
    mix = _mixture(4)
    chain = Chain(np.array([-np.inf, 0.5]))
    x = initial_noise(chain, 5, 3, 1)
    expect = chain.s[1] * x + chain.a[1] * mix.denoise(x, -np.inf)
    for fn in SAMPLERS.values():
        np.testing.assert_allclose(fn(mix.denoise, x, chain), expect, atol=1e-12)


def test_ddim_eta_noise_std():
    chain = make_chain(get_schedule("sd"), 10, "trailing")
    sig = ddim_noise_std(chain, 1.0)
    ab = chain.alpha_bar
    expect = np.sqrt((1 - ab[1:]) / (1 - ab[:-1]) * (1 - ab[:-1] / ab[1:]))
    np.testing.assert_allclose(sig, expect, rtol=1e-10)
    assert sig[-1] == 0.0  # landing clean injects no noise
    assert (sig <= chain.s[1:] + 1e-15).all()


def test_ddim_eta_deterministic_with_seed_and_moments():
    g = GaussianModel.diagonal(np.array([1.5, 0.2, 0.01]))
    chain = make_chain(get_schedule("sd"), 20, "trailing")
    x = initial_noise(chain, 40_000, 3, 0)
    a = sample_ddim(g.denoise, x, chain, rng=7, eta=1.0)
    b = sample_ddim(g.denoise, x, chain, rng=np.random.default_rng(7), eta=1.0)
    np.testing.assert_array_equal(a, b)
    o = gaussian_output_moments(g, sample_ddim, chain, eta=1.0)
    # sample variance within 5 standard errors of the exact variance (se = v sqrt(2 / (n - 1)))
    se = o.var * np.sqrt(2 / (x.shape[0] - 1))
    assert (np.abs(a.var(0, ddof=1) - o.var) < 5 * se).all()


def test_parse_and_bad_input():
    assert parse_sampler("ddim")[2] == {}
    assert parse_sampler("ddim:0.5")[2] == {"eta": 0.5}
    with pytest.raises(PifsError, match="unknown sampler 'lms'"):
        parse_sampler("lms")
    with pytest.raises(PifsError, match="eta"):
        parse_sampler("ddim:2")
    with pytest.raises(PifsError, match="no ':' option"):
        parse_sampler("heun:1")
    chain = make_chain(get_schedule("sd"), 5, "trailing")
    g = GaussianModel.diagonal([1.0, 1.0])
    with pytest.raises(PifsError, match="eta"):
        sample_ddim(g.denoise, np.zeros((2, 2)), chain, eta=-0.1)
    with pytest.raises(PifsError, match=r"\(B, d\)"):
        sample_ddim(g.denoise, np.zeros(2), chain)
    with pytest.raises(PifsError, match="Chain"):
        sample_euler(g.denoise, np.zeros((2, 2)), [0.0, 1.0])
    with pytest.raises(PifsError, match="unknown sampler"):
        sampler_nfe("foo", chain)
