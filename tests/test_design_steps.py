"""Criterion III: W2-optimal steps (closed-form surrogate, optimiser, conventions, baselines)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from pifskit import PifsError
from pifskit.chains import (
    AYS_SIGMAS,
    Chain,
    ays_chain,
    karras_chain,
    karras_sigmas,
    sigma_range,
)
from pifskit.design._binning import compress_spectrum
from pifskit.design.steps import (
    _objective,
    _w2sq,
    baseline_chains,
    gaussian_optimal_sigmas,
    optimal_steps,
    repair_timesteps,
    rms_log_sigma,
    w2_of_sigmas,
    w2_surrogate,
)
from pifskit.geometry import expansion_function
from pifskit.schedules import (
    CosineSchedule,
    DiscreteSchedule,
    RectifiedFlowSchedule,
    get_schedule,
)
from pifskit.spectra import Spectrum, powerlaw

SD = get_schedule("sd")
SP1 = powerlaw(64, 1, 1.5, 1.0)       # the theory's (check) spectrum
LATENT = powerlaw(64, 4, 1.5, 1.0)    # SD latent model 64x64x4


def test_w2_closed_form_matches_chain_product_of_expansion_functions():
    # independent route: std after the chain = r_start * prod_t f_t(lambda) (geometry.expansion_function)
    sig = np.array([14.6, 5.0, 1.3, 0.4, 0.1, 0.0])
    chain = Chain.from_sigmas(sig)
    lam = np.array([0.05, 0.3, 1.0, 4.0, 30.0])
    a0, s0 = chain.a[0], chain.s[0]
    sampled = np.sqrt(a0**2 * lam + s0**2) * np.prod(expansion_function(chain, lam), axis=0)
    w2_indep = np.sqrt(np.sum((np.sqrt(lam) - sampled) ** 2))
    assert w2_of_sigmas(sig, Spectrum(lam)) == pytest.approx(w2_indep, rel=1e-12)


def test_w2_of_not_clean_chain_uses_vp_std_at_final_level():
    sig = np.array([10.0, 2.0, 0.5, 0.05])
    chain = Chain.from_sigmas(sig)
    lam = np.array([0.2, 2.0])
    a, s = chain.a, chain.s
    sampled = np.sqrt(a[0] ** 2 * lam + s[0] ** 2) * np.prod(expansion_function(chain, lam), axis=0)
    true = np.sqrt(a[-1] ** 2 * lam + s[-1] ** 2)
    assert w2_of_sigmas(sig, Spectrum(lam)) == pytest.approx(np.sqrt(np.sum((true - sampled) ** 2)), rel=1e-12)


def test_lead_golden_default_convention_sd15_n10():
    r = optimal_steps(SD, SP1, 10, start="marginal")
    expected = [14.615, 7.145, 4.161, 2.619, 1.726, 1.168, 0.795, 0.528, 0.323, 0.154]
    np.testing.assert_allclose(r.sigmas[:-1], expected, rtol=2e-3)
    assert r.sigmas[-1] == 0.0
    ays = ays_chain("sd15", 10, SD)
    kar = karras_chain(SD, 10)
    assert r.w2**2 == pytest.approx(56.0, abs=0.1)
    assert w2_surrogate(ays, SP1) ** 2 == pytest.approx(59.9, abs=0.1)
    assert w2_surrogate(kar, SP1) ** 2 == pytest.approx(87.5, abs=0.2)
    assert rms_log_sigma(r.sigmas, ays.sigmas) == pytest.approx(0.135, abs=0.002)
    assert rms_log_sigma(kar.sigmas, ays.sigmas) == pytest.approx(0.877, abs=0.005)


def test_theory_check_fixed_endpoints_ays_convention():
    # theory section 6 III (check): 11 W2-optimal levels 0.11 RMS-log-sigma from AYS, Karras 0.45
    r = optimal_steps(SD, SP1, 10, fixed_endpoints=True, start="marginal")
    ays = AYS_SIGMAS["sd15"]
    smin, smax = sigma_range(SD)
    assert r.sigmas.size == 12 and r.sigmas[-1] == 0.0 and r.sigmas[-2] == pytest.approx(smin)
    assert rms_log_sigma(r.sigmas, ays) == pytest.approx(0.110, abs=0.003)
    assert rms_log_sigma(karras_sigmas(smin, smax, 11), ays) == pytest.approx(0.451, abs=0.003)


@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("c", [0.3, 1.0, 2.5])
def test_single_variance_reproduces_uniform_atan_closed_form(fixed, c):
    sched = CosineSchedule(0.008)
    sp = Spectrum(np.full(7, c**2))
    smin, smax = 1e-3, 50.0
    N = 8
    r = optimal_steps(sched, sp, N, fixed_endpoints=fixed, sigma_min=smin, sigma_max=smax, start="marginal")
    noisy = r.sigmas[:-1]
    psi = np.arctan(noisy / c)
    if fixed:
        expected = gaussian_optimal_sigmas(smax, N + 1, c, smin)
        np.testing.assert_allclose(np.diff(psi), np.full(N, np.diff(psi).mean()), rtol=1e-5)
    else:
        expected = gaussian_optimal_sigmas(smax, N, c, 0.0)
        # uniform in atan(sigma/c) including the final step to psi = 0
        steps = -np.diff(np.concatenate([psi, [0.0]]))
        np.testing.assert_allclose(steps, np.full(N, psi[0] / N), rtol=1e-5)
    np.testing.assert_allclose(noisy, expected, rtol=1e-5)


def test_analytic_gradient_matches_finite_differences():
    lam, _, total = compress_spectrum(LATENT)
    rng = np.random.default_rng(3)
    u0, D = np.log(14.6), np.log(14.6 / 0.03)
    for tail in (np.zeros(0), np.array([np.log(0.03)])):
        z = rng.normal(size=7)
        f, g = _objective(z, u0, D, tail, lam, total, 1.0)
        num = np.array([(_objective(z + h, u0, D, tail, lam, total, 1.0)[0]
                         - _objective(z - h, u0, D, tail, lam, total, 1.0)[0]) / 2e-6
                        for h in np.eye(7) * 1e-6])
        np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7 * abs(f))


def test_objective_equals_w2sq_of_the_levels():
    lam, count, total = compress_spectrum(LATENT)
    z = np.array([0.3, -0.2, 0.1, 0.0, 0.5])
    u0, D = np.log(14.6), np.log(14.6 / 0.03)
    f, _ = _objective(z, u0, D, np.zeros(0), lam, total, 1.0)
    p = np.exp(z) / np.exp(z).sum()
    levels = np.exp(u0 - D * np.concatenate([[0.0], np.cumsum(p[:-1])]))
    assert f == pytest.approx(_w2sq(np.concatenate([levels, [0.0]]), lam, count), rel=1e-12)


def test_optimum_beats_independent_derivative_free_search():
    sp = powerlaw(16, 1, 2.0, 0.5)
    N = 4
    r = optimal_steps(SD, sp, N, start="marginal")
    smin, smax = sigma_range(SD)

    def f(x):  # log sigmas of the free levels, any order: sort and clip
        free = np.exp(np.clip(np.sort(x)[::-1], np.log(smin), np.log(smax) - 1e-9))
        if np.any(np.diff(free) >= 0):
            return 1e9
        return w2_of_sigmas(np.concatenate([[smax], free, [0.0]]), sp)

    best = min(minimize(f, np.log(x0), method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12,
                                                                      "maxiter": 20000}).fun
               for x0 in ([5.0, 1.0, 0.2], [2.0, 0.5, 0.1], [10.0, 6.0, 3.0]))
    assert r.w2 <= best * (1 + 1e-7)
    assert r.w2 == pytest.approx(best, rel=1e-4)


def test_binning_agrees_with_exact_distinct_values():
    rng = np.random.default_rng(0)
    sp = Spectrum(np.exp(rng.normal(-1.0, 2.0, 20000)))
    assert compress_spectrum(sp)[0].size <= 1024
    sig = karras_chain(SD, 10).sigmas
    exact = w2_of_sigmas(sig, sp, max_bins=30000)
    assert w2_of_sigmas(sig, sp) == pytest.approx(exact, rel=2e-4)
    r_b = optimal_steps(SD, sp, 10, start="marginal")
    r_e = optimal_steps(SD, sp, 10, max_bins=30000, start="marginal")
    assert rms_log_sigma(r_b.sigmas, r_e.sigmas) < 2e-3


@pytest.mark.parametrize("exponent,variance", [(1.5, 1.0), (2.0, 1.0), (2.0, 0.205)])
def test_acceptance_sd15_latent_closer_to_ays_than_karras_and_lowest_w2(exponent, variance):
    sp = powerlaw(64, 4, exponent, variance)
    r = optimal_steps(SD, sp, 10, start="marginal")
    base = baseline_chains(SD, 10)
    assert set(base) == {"trailing", "leading", "uniform-logsnr", "karras-rho7", "ays-sd15", "ays-sdxl"}
    ays = base["ays-sd15"]
    assert rms_log_sigma(r.sigmas, ays.sigmas) < rms_log_sigma(base["karras-rho7"].sigmas, ays.sigmas)
    for name, ch in base.items():
        assert r.w2 < w2_surrogate(ch, sp), name
        assert r.w2_timesteps < w2_surrogate(ch, sp), name


def test_discrete_output_timesteps_and_sigmas():
    r = optimal_steps(SD, LATENT, 10, start="marginal")
    assert r.timesteps.dtype.kind == "i"
    assert r.timesteps[0] == 999 and (np.diff(r.timesteps) < 0).all() and r.timesteps[-1] >= 0
    # timesteps are the optimum's levels, rounded (refinement moves each by at most a few)
    frac = SD.timestep_of_sigma(r.sigmas[:-1])
    assert np.max(np.abs(r.timesteps - frac)) <= 3
    assert r.w2_timesteps == pytest.approx(r.w2, rel=1e-3)
    ch = Chain.from_timesteps(SD, r.timesteps)
    assert r.w2_timesteps == pytest.approx(w2_surrogate(ch, LATENT), rel=1e-12)


@pytest.mark.parametrize("N", [1, 2, 3, 37, 500, 999, 1000])
def test_robust_for_all_step_counts_on_discrete_schedule(N):
    r = optimal_steps(SD, LATENT, N, refine_timesteps=N < 50, start="marginal")
    assert r.sigmas.size == N + 1 and np.isfinite(r.sigmas).all() and r.sigmas[-1] == 0.0
    assert (np.diff(r.sigmas) < 0).all()
    assert r.timesteps.size == N and (np.diff(r.timesteps) < 0).all()
    assert r.timesteps.min() >= 0 and r.timesteps.max() <= 999
    assert np.isfinite(r.w2) and np.isfinite(r.w2_timesteps)
    if N == 1000:
        np.testing.assert_array_equal(r.timesteps, np.arange(999, -1, -1))


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 30), exponent=st.floats(0.0, 4.0), fixed=st.booleans(),
       shift=st.floats(0.5, 6.0))
def test_property_monotone_inside_endpoints(N, exponent, fixed, shift):
    sched = RectifiedFlowSchedule(shift)
    smin, smax = sigma_range(sched)
    r = optimal_steps(sched, powerlaw(16, 2, exponent, 0.7), N, fixed_endpoints=fixed, start="marginal")
    noisy = r.sigmas[:-1]
    assert (np.diff(r.sigmas) < 0).all() and np.isfinite(r.sigmas).all()
    assert noisy[0] == pytest.approx(smax) and noisy[-1] >= smin * (1 - 1e-12)
    assert r.timesteps is None
    # never worse than the uniform-log-sigma start
    uni = np.exp(np.linspace(np.log(smax), np.log(smin), N + (1 if fixed else 0)))
    if not fixed and N > 1:
        uni = np.exp(np.linspace(np.log(smax), np.log(smin), N + 1))[:-1]
    assert r.w2 <= w2_of_sigmas(np.concatenate([uni, [0.0]]), powerlaw(16, 2, exponent, 0.7)) * (1 + 1e-9)


def test_deterministic():
    a = optimal_steps(SD, LATENT, 17, start="marginal")
    b = optimal_steps(SD, LATENT, 17, start="marginal")
    np.testing.assert_array_equal(a.sigmas, b.sigmas)
    np.testing.assert_array_equal(a.timesteps, b.timesteps)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-20, 1100), min_size=1, max_size=60))
def test_repair_timesteps_property(ts):
    T = 1000
    ts_sorted = sorted(ts, reverse=True)
    out = repair_timesteps(ts_sorted, T)
    assert out.size == len(ts)
    assert (np.diff(out) < 0).all() and out.min() >= 0 and out.max() <= T - 1
    valid = np.array(ts_sorted)
    if (np.diff(valid) < 0).all() and valid.min() >= 0 and valid.max() <= T - 1:
        np.testing.assert_array_equal(out, valid)


def test_bad_input():
    with pytest.raises(PifsError, match="steps must be <= 1000"):
        optimal_steps(SD, LATENT, 1001, start="marginal")
    with pytest.raises(PifsError, match="steps must be <= 999"):
        optimal_steps(SD, LATENT, 1000, fixed_endpoints=True, start="marginal")
    with pytest.raises(PifsError, match="empty optimisation"):
        optimal_steps(SD, LATENT, 10, sigma_min=1.0, sigma_max=1.0, start="marginal")
    with pytest.raises(PifsError):
        optimal_steps(SD, LATENT, 0, start="marginal")
    with pytest.raises(PifsError, match="no positive eigenvalue"):
        Spectrum(np.zeros(4))
    with pytest.raises(PifsError, match="same number"):
        rms_log_sigma([3.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0])
    with pytest.raises(PifsError):
        repair_timesteps(np.arange(5), 4)


def test_baselines_for_continuous_schedule_have_no_ays():
    base = baseline_chains(CosineSchedule(), 10)
    assert set(base) == {"uniform-t", "uniform-logsnr", "karras-rho7"}
    other = DiscreteSchedule.linear(1000)
    assert "ays-sd15" not in baseline_chains(other, 10)


def test_prior_start_closed_form_matches_chain_product():
    # sampler starts from N(0, I) in VP units: start std 1 instead of the marginal r_0
    sig = np.array([14.6, 5.0, 1.3, 0.4, 0.1, 0.0])
    chain = Chain.from_sigmas(sig)
    lam = np.array([0.05, 0.3, 1.0, 4.0, 30.0])
    sampled = 1.0 * np.prod(expansion_function(chain, lam), axis=0)
    w2_indep = np.sqrt(np.sum((np.sqrt(lam) - sampled) ** 2))
    assert w2_of_sigmas(sig, Spectrum(lam), start="prior") == pytest.approx(w2_indep, rel=1e-12)
    # from pure noise both modes agree
    sig_inf = np.array([np.inf, 3.0, 0.5, 0.0])
    assert w2_of_sigmas(sig_inf, Spectrum(lam), start="prior") == pytest.approx(w2_of_sigmas(sig_inf, Spectrum(lam)))


def test_analytic_gradient_with_prior_start_gain():
    from pifskit.design.steps import _start_gain
    lam, _, total = compress_spectrum(LATENT)
    gain = _start_gain(14.6, lam, "prior")
    z = np.random.default_rng(5).normal(size=6)
    u0, D = np.log(14.6), np.log(14.6 / 0.03)
    f, g = _objective(z, u0, D, np.zeros(0), lam, total, 1.0, gain)
    num = np.array([(_objective(z + h, u0, D, np.zeros(0), lam, total, 1.0, gain)[0]
                     - _objective(z - h, u0, D, np.zeros(0), lam, total, 1.0, gain)[0]) / 2e-6
                    for h in np.eye(6) * 1e-6])
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7 * abs(f))


@pytest.mark.parametrize("N", [3, 5, 10])
def test_prior_start_optimum_beats_every_baseline_including_leading(N):
    # under the marginal-start surrogate, 'leading' (first level t = 900 + ...) gets its lower start for free;
    # with the sampler's real N(0, I) start the optimum beats every baseline at every N
    r = optimal_steps(SD, LATENT, N, start="prior")
    for name, ch in baseline_chains(SD, N).items():
        assert r.w2 < w2_surrogate(ch, LATENT, start="prior"), name
    with pytest.raises(PifsError, match="start"):
        optimal_steps(SD, LATENT, N, start="noise")
