"""Schedules: closed forms, stability at the ends, inverses, discrete versions."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import expit

from pifskit import PifsError, get_schedule
from pifskit.schedules import (
    SCHEDULE_NAMES,
    CosineSchedule,
    DiscreteSchedule,
    EDMSchedule,
    LinearBetaSchedule,
    RectifiedFlowSchedule,
    ScaledLinearBetaSchedule,
    ShiftedCosineSchedule,
    SigmoidSchedule,
    a_from_logsnr,
    angle_from_logsnr,
    logsnr_from_alpha_bar,
    s_from_logsnr,
)

T = np.linspace(0, 1, 101)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_zoo_monotone_and_vp(name):
    sched = get_schedule(name)
    l = sched.logsnr(T)
    assert not np.isnan(l).any()
    assert (np.diff(l) <= 0).all()
    a, s = sched.a(T), sched.s(T)
    np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=1e-14)


def test_cosine_closed_form():
    sched = CosineSchedule(0.008)
    t = np.linspace(0.01, 0.99, 50)
    f = lambda t: np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    np.testing.assert_allclose(sched.alpha_bar(t), f(t) / f(0), rtol=1e-12)
    assert sched.logsnr(1.0) == -np.inf and sched.logsnr(0.0) == np.inf
    # stable near t = 0: 1 - alpha_bar is tiny but logSNR is accurate
    t0 = 1e-9
    ab = f(t0) / f(0)
    ref = np.log(ab) - np.log(-np.expm1(np.log(np.cos((t0 + 0.008) / 1.008 * np.pi / 2) ** 2) - np.log(f(0))))
    assert sched.logsnr(t0) == pytest.approx(ref, rel=1e-6)


def test_cosine_discretize_matches_nichol_dhariwal_clipping():
    d = CosineSchedule(0.008).discretize(1000)
    betas = d.betas
    assert betas.max() == pytest.approx(0.999)
    assert d.alphas_cumprod[-1] > 0  # clipping keeps the last level off pure noise
    np.testing.assert_allclose(d.alphas_cumprod[:10], CosineSchedule(0.008).alpha_bar(np.arange(1, 11) / 1000),
                               rtol=1e-12)


def test_linear_beta_continuous_matches_discrete():
    cont = LinearBetaSchedule()
    disc = DiscreteSchedule.linear(1000)
    t = (np.arange(1000) + 1) / 1000
    # the continuous VP-SDE form uses exp(-sum beta) where the discrete one has prod(1 - beta): they differ by
    # sum beta^2 / 2 <= 0.07 in log alpha_bar at T = 1000
    np.testing.assert_allclose(cont.logsnr(t)[50:950], disc.logsnr_table[50:950], atol=0.07)
    cont2 = ScaledLinearBetaSchedule()
    disc2 = DiscreteSchedule.scaled_linear(1000)
    np.testing.assert_allclose(cont2.logsnr(t)[50:950], disc2.logsnr_table[50:950], atol=0.02)


def test_sigmoid_endpoints_and_formula():
    sched = SigmoidSchedule(-3, 3, 1.0)
    t = np.array([0.3, 0.7])
    v0, v1 = expit(-3), expit(3)
    ab = (v1 - expit(-3 + 6 * t)) / (v1 - v0)
    np.testing.assert_allclose(sched.alpha_bar(t), ab, rtol=1e-12)
    assert sched.logsnr(0.0) == np.inf and sched.logsnr(1.0) == -np.inf


def test_shifted_cosine_is_a_pure_shift():
    base = ShiftedCosineSchedule()
    sh = ShiftedCosineSchedule.for_resolution(256, 64)
    np.testing.assert_allclose(sh.logsnr(T) - base.logsnr(T), 2 * np.log(64 / 256), rtol=1e-12)
    np.testing.assert_allclose(base.logsnr(np.array([0.0, 1.0])), [15.0, -15.0], rtol=1e-12)


def test_rectified_flow_shift_and_inverse():
    sched = RectifiedFlowSchedule(3.0)
    t = np.linspace(0.05, 0.95, 19)
    tp = 3 * t / (1 + 2 * t)
    np.testing.assert_allclose(sched.logsnr(t), 2 * np.log((1 - tp) / tp), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sched.t_of_logsnr(sched.logsnr(t)), t, rtol=1e-12)


def test_edm_sigma():
    sched = EDMSchedule()
    np.testing.assert_allclose(sched.sigma(np.array([0.0, 1.0])), [0.002, 80.0], rtol=1e-12)
    t = np.linspace(0, 1, 7)
    np.testing.assert_allclose(sched.t_of_logsnr(sched.logsnr(t)), t, atol=1e-12)


@pytest.mark.parametrize("name", ["cosine", "sigmoid", "shifted-cosine", "ddpm-linear", "sd-scaled-linear", "sd"])
def test_generic_inverse(name):
    sched = get_schedule(name)
    t = np.linspace(0.02, 0.98, 25)
    np.testing.assert_allclose(sched.t_of_logsnr(sched.logsnr(t)), t, atol=1e-9)


def test_vp_coordinates_at_the_ends():
    l = np.array([-np.inf, -800.0, -40.0, 0.0, 40.0, 800.0, np.inf])
    a, s = a_from_logsnr(l), s_from_logsnr(l)
    np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=1e-15)
    assert a[0] == 0 and s[-1] == 0 and a[-1] == 1 and s[0] == 1
    assert a[2] == pytest.approx(np.exp(-20), rel=1e-12)  # no underflow to 0 at moderate logSNR
    np.testing.assert_allclose(angle_from_logsnr(l)[[0, 3, 6]], [np.pi / 2, np.pi / 4, 0.0])
    ab = np.array([0.0, 1e-300, 0.5, 1 - 1e-12, 1.0])
    np.testing.assert_allclose(logsnr_from_alpha_bar(ab)[1:4], [np.log(1e-300), 0.0, np.log((1 - 1e-12) / 1e-12)],
                               rtol=1e-4)


def test_discrete_schedule_continuous_view():
    d = get_schedule("sd")
    n = np.arange(1000)
    np.testing.assert_allclose(d.logsnr((n + 1) / 1000), d.logsnr_table, rtol=1e-9, atol=1e-9)
    assert d.logsnr(0.0) == np.inf
    assert d.logsnr_at_timestep(-1) == np.inf
    np.testing.assert_allclose(d.logsnr_at_timestep(n), d.logsnr_table)


def test_discrete_timestep_of_sigma_roundtrip():
    d = get_schedule("sd")
    ts = np.array([0, 10, 500, 999])
    np.testing.assert_allclose(d.timestep_of_sigma(d.sigmas_table[ts]), ts, atol=1e-6)


@pytest.mark.parametrize("bad, msg", [
    ("nope", "unknown schedule"),
    ("cosine:abc", "must be a number"),
    ("edm:3", "takes no"),
    ("cosine:1.5", "offset must lie"),
])
def test_bad_names(bad, msg):
    with pytest.raises(PifsError, match=msg):
        get_schedule(bad)


def test_bad_discrete():
    with pytest.raises(PifsError, match="non-increasing"):
        DiscreteSchedule(np.array([0.5, 0.9]))
    with pytest.raises(PifsError, match="NaN"):
        DiscreteSchedule(np.array([0.9, np.nan]))
    with pytest.raises(PifsError, match="betas must lie"):
        DiscreteSchedule.from_betas([0.1, 1.5])
    with pytest.raises(PifsError, match="t must lie"):
        get_schedule("cosine").logsnr(1.5)


@given(st.lists(st.floats(1e-5, 0.5), min_size=2, max_size=50))
def test_discrete_from_random_betas(betas):
    d = DiscreteSchedule.from_betas(betas)
    ab = np.cumprod(1 - np.array(betas))
    np.testing.assert_allclose(d.alphas_cumprod, ab, rtol=1e-12)
    np.testing.assert_allclose(d.betas, betas, rtol=1e-6, atol=1e-12)
    assert (np.diff(d.logsnr_table) < 0).all()
