"""The (check) identities of theory sections 2-4, as tests."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import expit

from pifskit import Chain, PifsError, get_schedule, make_chain
from pifskit.geometry import (
    chain_exponent,
    contraction_threshold,
    denoiser_gain,
    expansion_function,
    expansion_threshold,
    global_threshold,
    lambda_grid,
    local_rate,
    regime_boundary_step,
    release_logsnr,
    release_step,
    step_angles,
    step_coefficients,
)


def direct(chain):
    """Plain-formula reference: a, s of source and target levels."""
    ab = chain.alpha_bar
    a, s = np.sqrt(ab), np.sqrt(1 - ab)
    return a[:-1], a[1:], s[:-1], s[1:]


def interior_chain(rng, n=12):
    l = np.sort(rng.uniform(-8, 8, n + 1))
    return Chain(l)


def test_coefficients_match_direct_formulas(rng):
    ch = interior_chain(rng)
    at, as_, st_, ss = direct(ch)
    c, d = step_coefficients(ch)
    np.testing.assert_allclose(c, ss / st_, rtol=1e-12)
    np.testing.assert_allclose(d, as_ - at * ss / st_, rtol=1e-10)


def test_contraction_threshold_three_forms(rng):
    ch = interior_chain(rng)
    at, as_, st_, ss = direct(ch)
    c, d = step_coefficients(ch)
    L = contraction_threshold(ch)
    np.testing.assert_allclose(L, (1 - c) / d, rtol=1e-10)
    np.testing.assert_allclose(L, (st_ - ss) / (as_ * st_ - at * ss), rtol=1e-9)
    ang = step_angles(ch)
    np.testing.assert_allclose(L, np.cos(ang.phi_bar) / np.cos(ang.delta / 2), rtol=1e-14)


def test_contraction_threshold_continuum_limit():
    # tiny steps: L*_t -> a_t
    l = np.linspace(-6, 6, 20001)
    ch = Chain(l)
    L = contraction_threshold(ch)
    np.testing.assert_allclose(L, ch.a[:-1], rtol=2e-4)


def test_tiny_steps_are_stable():
    # steps of 1e-9 in logSNR: the angle difference has no cancellation
    l = np.array([-3.0, -3.0 + 1e-9, 0.0, 1e-9])
    ang = step_angles(Chain(l))
    phi = np.arctan(np.exp(-l / 2))
    dphi_dl = -0.5 * np.cos(phi) * np.sin(phi)  # d phi / d l = -(1/2) sin(phi) cos(phi)
    np.testing.assert_allclose(ang.delta[[0, 2]], -dphi_dl[[0, 2]] * 1e-9, rtol=1e-6)


def test_final_step_to_clean_and_first_from_noise():
    ch = Chain(np.array([-np.inf, -1.0, 2.0, np.inf]))
    c, d = step_coefficients(ch)
    L = contraction_threshold(ch)
    assert c[-1] == 0 and d[-1] == pytest.approx(1.0, abs=1e-15) and L[-1] == pytest.approx(1.0, abs=1e-15)
    lam = np.array([0.0, 0.3, 1.0, 50.0, 1e8])
    f = expansion_function(ch, lam)
    np.testing.assert_allclose(f[0], ch.s[1], rtol=1e-14)  # from pure noise every direction scales by s_s
    assert expansion_threshold(ch)[0] == np.inf
    # final step: f = g of the denoiser (c = 0, d = 1)
    np.testing.assert_allclose(f[-1], denoiser_gain(ch.logsnr[-2], lam)[0], rtol=1e-14)


def test_expansion_function_three_forms(rng):
    ch = interior_chain(rng)
    lam = np.logspace(-4, 4, 57)
    at, as_, st_, ss = (v[:, None] for v in direct(ch))
    c, d = (v[:, None] for v in step_coefficients(ch))
    f = expansion_function(ch, lam)
    g = at * lam / (at**2 * lam + st_**2)
    np.testing.assert_allclose(f, c + d * g, rtol=1e-10)
    r = lambda a, s: np.sqrt(a**2 * lam + s**2)  # noqa: E731
    psi = lambda a, s: np.arctan(s / (a * np.sqrt(lam)))  # noqa: E731
    np.testing.assert_allclose(f, r(as_, ss) / r(at, st_) * np.cos(psi(at, st_) - psi(as_, ss)), rtol=1e-10)


def test_expansion_function_limits_and_threshold(rng):
    ch = interior_chain(rng)
    at, as_, st_, ss = direct(ch)
    f = expansion_function(ch, np.array([0.0, np.inf]))
    np.testing.assert_allclose(f[:, 0], ss / st_, rtol=1e-12)
    np.testing.assert_allclose(f[:, 1], as_ / at, rtol=1e-12)
    lam_star = expansion_threshold(ch)
    np.testing.assert_allclose(lam_star, st_ * (st_ - ss) / (at * (as_ - at)), rtol=1e-8)
    assert (lam_star > 1).all()
    # f(lambda*) = 1, and g(lambda*) = L*
    np.testing.assert_allclose(np.diag(expansion_function(ch, lam_star)), 1.0, rtol=1e-10)
    g_star = np.array([denoiser_gain(ch.logsnr[i], [lam_star[i]])[0, 0] for i in range(ch.n_steps)])
    np.testing.assert_allclose(g_star, contraction_threshold(ch), rtol=1e-10)


def test_lambda_star_continuum_limit():
    ch = Chain(np.linspace(-5, 5, 10001))
    np.testing.assert_allclose(expansion_threshold(ch), 1.0, atol=2e-3)


def test_lambda_2star_cosine_ten_uniform_steps():
    # theory section 3 (check): 10 uniform DDIM steps on the cosine schedule give lambda** ~ 1.28
    ch = make_chain(get_schedule("cosine"), 10, "uniform")
    assert ch.starts_from_noise and ch.lands_clean
    assert global_threshold(ch) == pytest.approx(1.2832, abs=1e-3)
    # the discrete cosine schedule with trailing spacing agrees
    ch2 = make_chain(get_schedule("cosine-discrete"), 10, "trailing")
    assert global_threshold(ch2) == pytest.approx(1.2832, abs=2e-3)


def test_lambda_2star_continuum_is_one_and_exponent_is_half_log():
    sched = get_schedule("cosine")
    ch = make_chain(sched, 4000, "uniform")
    lam = np.array([0.01, 0.5, 2.0, 30.0])
    np.testing.assert_allclose(chain_exponent(ch, lam), 0.5 * np.log(lam), atol=3e-3)
    assert global_threshold(ch) == pytest.approx(1.0, abs=1e-3)
    # coarse chains raise it
    assert global_threshold(make_chain(sched, 5, "uniform")) > global_threshold(make_chain(sched, 20, "uniform")) > 1


def test_global_threshold_is_root(rng):
    ch = make_chain(get_schedule("sd"), 25, "trailing")
    lam2 = global_threshold(ch)
    assert abs(chain_exponent(ch, [lam2])[0]) < 1e-12
    assert chain_exponent(ch, [lam2 * 1.01])[0] > 0 > chain_exponent(ch, [lam2 / 1.01])[0]


def test_global_threshold_nan_without_sign_change():
    # a chain that neither starts at noise nor ends clean, with every f < 1 far below: Lambda(inf) = log(a_N/a_0)
    ch = Chain(np.array([1.0, 1.5]))
    assert chain_exponent(ch, [np.inf])[0] > 0
    assert np.isfinite(global_threshold(ch))
    ch2 = Chain(np.array([-np.inf, np.inf]))  # one step noise -> clean: f = s_s = 0
    assert np.isnan(global_threshold(ch2))


def test_local_rate_is_derivative_of_log_r():
    l = np.linspace(-10, 10, 41)
    lam = np.array([0.01, 1.0, 7.0])
    h = 1e-5
    logr = lambda l: 0.5 * np.log(expit(l)[:, None] * lam + expit(-l)[:, None])  # noqa: E731
    num = (logr(l + h) - logr(l - h)) / (2 * h)
    np.testing.assert_allclose(local_rate(l, lam), num, atol=1e-9)
    assert (local_rate(l, [1.0]) == 0).all()


def test_release_at_minus_log_lambda():
    lam = np.array([1e-3, 0.2, 1.0, 40.0])
    lr = release_logsnr(lam)
    a = np.sqrt(expit(lr))
    g = np.diag(denoiser_gain(lr, lam))
    np.testing.assert_allclose(a * g, 0.5, rtol=1e-12)  # a g crosses 1/2
    ch = make_chain(get_schedule("sd"), 10, "trailing")
    steps = release_step(ch, lam)
    for k, i in enumerate(steps):
        if 0 <= i < ch.n_steps:
            assert ch.logsnr[i] < lr[k] <= ch.logsnr[i + 1]
    # larger variances are released earlier (strict variance order)
    assert (np.diff(steps[::-1]) >= 0).all() and steps[-1] < steps[0]


def test_regime_boundary():
    ch = Chain(np.array([-4.0, -2.0, -0.5, 0.3, 2.0, np.inf]))
    # mid-angles: steps 0,1 fully noisy; step 2 straddles with mid logSNR < 0 -> phi_bar > pi/4
    b = regime_boundary_step(ch)
    phibar = step_angles(ch).phi_bar
    assert b == int((phibar > np.pi / 4).sum())
    assert (phibar[:b] > np.pi / 4).all() and (phibar[b:] <= np.pi / 4).all()
    assert regime_boundary_step(Chain(np.array([1.0, 2.0]))) == 0
    assert regime_boundary_step(Chain(np.array([-3.0, -2.0]))) == 1


def test_bad_lambda():
    ch = Chain(np.array([-1.0, 1.0]))
    with pytest.raises(PifsError, match=">= 0"):
        expansion_function(ch, [-1.0])
    with pytest.raises(PifsError, match="NaN"):
        expansion_function(ch, [np.nan])


# ---------------------------------------------------------------------------
# property-based invariants over random valid chains
# ---------------------------------------------------------------------------

@st.composite
def chains(draw):
    n = draw(st.integers(1, 30))
    l = np.sort(np.array(draw(st.lists(st.floats(-20, 20), min_size=n + 1, max_size=n + 1, unique=True))))
    if np.diff(l).min() < 1e-6:
        l = np.linspace(l[0], l[0] + 1e-3 * (n + 1) + 1, n + 1)
    if draw(st.booleans()):
        l[0] = -np.inf
    if draw(st.booleans()):
        l[-1] = np.inf
    if l.size == 2 and np.isinf(l).all():
        l[-1] = 5.0
    return Chain(l)


@given(chains(), st.lists(st.floats(1e-8, 1e8), min_size=2, max_size=20))
def test_invariants(ch, lam):
    lam = np.sort(np.array(lam))
    f = expansion_function(ch, lam)
    assert np.isfinite(f).all()
    assert (np.diff(f, axis=1) >= -1e-12 * f[:, 1:]).all()  # f increasing in lambda
    L = contraction_threshold(ch)
    assert (L > 0).all() and (L <= 1 + 1e-12).all()
    assert (expansion_threshold(ch) >= 1 - 1e-9).all()  # lambda* >= 1 for VP chains
    c, d = step_coefficients(ch)
    assert ((c >= 0) & (c < 1)).all() and (d > 0).all()
    Lam = chain_exponent(ch, lam)
    assert (np.diff(Lam) >= -1e-9 * (1 + np.abs(Lam[1:]))).all()
    # f > 1 exactly where lambda > lambda*
    above = lam[None, :] > expansion_threshold(ch)[:, None]
    assert ((f > 1) == above)[np.abs(f - 1) > 1e-9].all()


def test_lambda_grid():
    g = lambda_grid(5, 1e-2, 1e2)
    np.testing.assert_allclose(g, [1e-2, 1e-1, 1, 10, 100])
