"""Per-level linear model (LevelSpectra) in the solver closed forms: reduces to the Gaussian exactly, its
target is the exact flow of the same model, the closed form agrees with the numpy samplers, gradients."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from pifskit import PifsError
from pifskit.chains import Chain
from pifskit.design.level_spectrum import LevelSpectra
from pifskit.design.solvers import SOLVERS, output_gain, solver_kl, solver_w2sq
from pifskit.design.steps import optimal_steps, score_levels
from pifskit.samplers import SAMPLERS
from pifskit.schedules import get_schedule
from pifskit.spectra import Spectrum

LAM = np.array([0.002, 0.05, 0.3, 1.0, 4.0])
CNT = np.array([3.0, 1.0, 2.0, 1.0, 1.0])
CHAIN = np.array([14.6, 5.0, 1.3, 0.4, 0.1, 0.03, 0.0])
LEVELS = np.array([0.03, 0.2, 0.8, 2.0, 6.0, 14.6])


def _varying(seed=0):
    """A model whose variances move by up to e^{+-1} between levels (a mixture-like window)."""
    rng = np.random.default_rng(seed)
    return LevelSpectra(LEVELS, LAM[None, :] * np.exp(rng.uniform(-1, 1, (LEVELS.size, LAM.size))), CNT)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("start", ["prior", "prior-ve", "marginal"])
def test_constant_model_is_todays_criterion(solver, start):
    for ls in (LevelSpectra.constant(LAM, CNT), LevelSpectra(LEVELS, np.tile(LAM, (LEVELS.size, 1)), CNT)):
        np.testing.assert_allclose(ls.target_std(), np.sqrt(LAM), rtol=0, atol=1e-15)
        for sig in (CHAIN, np.array([np.inf, 3.0, 0.5, 0.05, 0.0])):
            a, ga = solver_w2sq(solver, sig, LAM, CNT, start, grad=True)
            b, gb = solver_w2sq(solver, sig, ls, CNT, start, grad=True)
            assert abs(a - b) <= 1e-10 * max(a, 1e-3)
            np.testing.assert_allclose(gb, ga, rtol=0, atol=1e-10)
            assert solver_kl(solver, sig, ls, CNT, start) == pytest.approx(solver_kl(solver, sig, LAM, CNT, start),
                                                                          rel=1e-10)


def test_target_is_the_exact_flow_of_the_linear_model():
    """t_k against an independent ODE solve of dy/dsigma = (1 - g_k(sigma)) y / sigma from the model's marginal
    at the top level down to sigma = 1e-7 (below the lowest level the model is Gaussian, so y(1e-7) is y(0)
    to ~1e-14 / lambda)."""
    ls = _varying()
    top = LEVELS[-1]
    r0 = np.sqrt(ls.variance(np.array([[top]]))[0] + top**2)

    def rhs(u, y):  # in u = log sigma: dy/du = (1 - g) y
        return (1.0 - ls.gain(np.array([[np.exp(u)]]))[0]) * y

    sol = solve_ivp(rhs, (np.log(top), np.log(1e-7)), r0, rtol=1e-11, atol=1e-13, method="DOP853")
    np.testing.assert_allclose(ls.target_std(), sol.y[:, -1], rtol=1e-7)
    # log t = 1/2 v(u_1) + 1/2 int g dv with 0 < g < 1: t lies within the model's range of sqrt(lambda)
    assert (ls.target_std() >= np.sqrt(ls.lam.min(0)) * (1 - 1e-12)).all()
    assert (ls.target_std() <= np.sqrt(ls.lam.max(0)) * (1 + 1e-12)).all()


def test_fine_ddim_converges_to_the_target():
    """A DDIM chain with many steps from the model's marginal at the top level lands on t_k: the criterion
    compares the solver with the flow of the same model (zero error in the limit)."""
    ls = _varying(1)
    sig = np.concatenate([np.exp(np.linspace(np.log(LEVELS[-1]), np.log(1e-4), 4000)), [0.0]])
    m = output_gain("ddim", sig, ls, "marginal")
    np.testing.assert_allclose(np.abs(m), ls.target_std(), rtol=2e-3)
    assert sig[::8][-1] == 0.0
    heun, ddim = (solver_w2sq(s, sig[::8], ls, CNT, "marginal") for s in ("heun", "ddim"))
    assert heun < 1e-7 and heun < 1e-3 * ddim  # second order vs first order on the same 500 levels


@pytest.mark.parametrize("solver", SOLVERS)
def test_closed_form_matches_the_numpy_sampler_with_a_time_varying_linear_denoiser(solver):
    """Run pifskit.samplers with D(y; sigma) = g_k(sigma) y on the basis vectors: row k of the output is m_k e_k."""
    ls = _varying(2)
    sig = CHAIN
    chain = Chain.from_sigmas(sig, None)
    K = LAM.size

    def den(x, logsnr):  # VP in, x0 out: y = x / a, D = g(sigma) y
        s = float(np.exp(-0.5 * logsnr))
        a = 1.0 / np.sqrt(1.0 + s * s)
        return x / a * ls.gain(np.array([[s]]))[0]

    xT = np.eye(K)  # VP N(0, I) start: VE std sqrt(1 + sigma_0^2) along each axis
    out = SAMPLERS[solver](den, xT, chain)
    np.testing.assert_allclose(np.diag(out), output_gain(solver, sig, ls, "prior"), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
def test_gradient_matches_finite_differences(solver):
    ls = _varying(3)
    val, g = solver_w2sq(solver, CHAIN, ls, CNT, "prior", grad=True)
    h = 1e-6
    for j in range(CHAIN.size - 1):
        up, dn = CHAIN.copy(), CHAIN.copy()
        up[j] *= np.exp(h)
        dn[j] *= np.exp(-h)
        fd = (solver_w2sq(solver, up, ls, CNT) - solver_w2sq(solver, dn, ls, CNT)) / (2 * h)
        assert g[j] == pytest.approx(fd, rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("solver", ["ddim", "heun", "dpmpp2m"])
def test_optimal_steps_with_a_constant_model_equals_the_spectrum_design(solver):
    sched = get_schedule("sd")
    d0 = optimal_steps(sched, Spectrum(np.repeat(LAM, CNT.astype(int))), 8, solver=solver)
    d1 = optimal_steps(sched, LevelSpectra.constant(LAM, CNT), 8, solver=solver)
    assert d1.w2 == pytest.approx(d0.w2, rel=1e-6)
    if solver != "dpmpp2m":  # a flat optimum: the multistep design may settle a rounding apart
        np.testing.assert_allclose(d1.sigmas, d0.sigmas, rtol=1e-6)
    for name, b in d0.baselines.items():
        assert d1.baselines[name]["w2"] == pytest.approx(b["w2"], rel=1e-10)


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp2m"])
@pytest.mark.parametrize("N", [1, 3, 7])
def test_model_aware_optimum_beats_every_baseline_under_its_own_metric(solver, N):
    ls = _varying(4)
    d = optimal_steps(get_schedule("sd"), ls, N, solver=solver)
    assert d.baselines
    for name, b in d.baselines.items():
        assert d.w2 <= b["w2"] + 1e-12, name
        assert b["w2"] == pytest.approx(score_levels(b["sigmas"], ls, solver), rel=1e-12)
    assert d.w2 == pytest.approx(score_levels(d.sigmas, ls, solver), rel=1e-12)


def test_bad_level_spectra():
    with pytest.raises(PifsError, match="directions"):
        LevelSpectra(LEVELS, np.ones((LEVELS.size, 3)), np.ones(2))
    with pytest.raises(PifsError, match="> 0"):
        LevelSpectra(LEVELS[:2], np.array([[1.0], [0.0]]), np.ones(1))
    with pytest.raises(PifsError, match="distinct"):
        LevelSpectra(np.array([1.0, 1.0]), np.ones((2, 1)), np.ones(1))
    g = LevelSpectra.from_gains([0.5, 2.0], [[0.8], [0.2]])
    np.testing.assert_allclose(g.lam[:, 0], [0.25 * 4, 4.0 * 0.25])
