"""The sliced-W2 step-design criterion (metric="sw2"): the estimate against brute-force Monte Carlo with explicit
unit vectors, its gradient against finite differences, the optimum-vs-baselines contract under its own metric,
level models, the CLI switch and bad input."""

import json

import numpy as np
import pytest

from pifskit import PifsError
from pifskit.cli import main
from pifskit.design._binning import compress_spectrum
from pifskit.design.level_spectrum import LevelSpectra
from pifskit.design.solvers import output_gain, solver_sw2sq, sw2_standard_error, sw2_weights
from pifskit.design.steps import optimal_steps, score_levels
from pifskit.schedules import get_schedule
from pifskit.spectra import Spectrum, powerlaw

LAM = np.array([4.0, 1.0, 0.3, 0.05, 0.01])
CNT = np.array([1.0, 2.0, 1.0, 3.0, 1.0])
NULL = 2  # zero-variance directions: d = 10
CHAIN = np.array([14.6, 3.0, 0.8, 0.2, 0.05, 0.0])


def _brute_force_sw2sq(m: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """mean_u (|diag(m) u| - |diag(sqrt(lambda)) u|)^2 over explicit unit vectors u in R^d, and its std error."""
    mm = np.concatenate([np.repeat(m, CNT.astype(int)), np.zeros(NULL)])
    ss = np.concatenate([np.repeat(np.sqrt(LAM), CNT.astype(int)), np.zeros(NULL)])
    u = np.random.default_rng(seed).standard_normal((n, mm.size))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r2 = (np.sqrt((u * u) @ (mm * mm)) - np.sqrt((u * u) @ (ss * ss))) ** 2
    return float(r2.mean()), float(r2.std(ddof=1) / np.sqrt(n))


@pytest.mark.parametrize("solver", ["ddim", "heun", "dpmpp2m"])
def test_sw2_estimate_matches_brute_force_monte_carlo(solver):
    m = output_gain(solver, CHAIN, LAM, "prior")
    W = sw2_weights(CNT, 20000, seed=1, null=NULL)
    est = solver_sw2sq(solver, CHAIN, LAM, W, "prior")
    se = sw2_standard_error(solver, CHAIN, LAM, W, "prior")
    ref, se_ref = _brute_force_sw2sq(m, 100000, seed=2)
    assert est > 0 and se < 0.02 * est
    assert abs(est - ref) < 4.0 * np.hypot(se, se_ref), (est, ref, se, se_ref)


def test_weights_are_the_bin_masses_of_a_unit_vector():
    W = sw2_weights(CNT, 40000, seed=3, null=NULL)
    d = CNT.sum() + NULL
    assert np.all(W > 0) and np.all(W.sum(axis=1) < 1.0)
    np.testing.assert_allclose(W.sum(axis=1).mean(), CNT.sum() / d, atol=3e-3)
    # E[chi2(c) / chi2(d)] = c / d, Var = 2 c (d - c) / (d^2 (d + 2)) (a Beta(c/2, (d-c)/2) variable)
    np.testing.assert_allclose(W.mean(axis=0), CNT / d, atol=4e-3)
    np.testing.assert_allclose(W.var(axis=0), 2 * CNT * (d - CNT) / (d * d * (d + 2)), rtol=0.05)
    # fixed seed: reproducible
    np.testing.assert_array_equal(sw2_weights(CNT, 8, seed=5), sw2_weights(CNT, 8, seed=5))


@pytest.mark.parametrize("solver", ["ddim", "heun", "dpmpp2m", "dpmpp3m", "ipndm"])
@pytest.mark.parametrize("start", ["prior", "prior-ve"])
def test_sw2_gradient_matches_finite_differences(solver, start):
    W = sw2_weights(CNT, 256, seed=0, null=NULL)
    val, g = solver_sw2sq(solver, CHAIN, LAM, W, start, grad=True)
    assert g.shape == (CHAIN.size - 1,)
    h = 1e-6
    num = np.empty_like(g)
    for j in range(g.size):
        hi, lo = CHAIN.copy(), CHAIN.copy()
        hi[j] *= np.exp(h)
        lo[j] *= np.exp(-h)
        num[j] = (solver_sw2sq(solver, hi, LAM, W, start) - solver_sw2sq(solver, lo, LAM, W, start)) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-9 * max(val, 1.0))


def test_sw2_gradient_pure_noise_start_and_level_model():
    ls = LevelSpectra.constant(LAM, CNT)
    W = sw2_weights(CNT, 128, seed=0)
    sig = np.array([np.inf, 3.0, 0.7, 0.1, 0.0])
    a, ga = solver_sw2sq("heun", sig, LAM, W, "prior", grad=True)
    b, gb = solver_sw2sq("heun", sig, ls, W, "prior", grad=True)
    assert a == pytest.approx(b, rel=1e-10)
    np.testing.assert_allclose(ga, gb, rtol=1e-8, atol=1e-14)
    assert ga[0] == 0.0  # the inf level is no variable
    h = 1e-6
    for j in (1, 2, 3):
        hi, lo = sig.copy(), sig.copy()
        hi[j] *= np.exp(h)
        lo[j] *= np.exp(-h)
        fd = (solver_sw2sq("heun", hi, LAM, W) - solver_sw2sq("heun", lo, LAM, W)) / (2 * h)
        assert ga[j] == pytest.approx(fd, rel=1e-5)


def _digits_like() -> Spectrum:
    """A 64-d spectrum with a heavy top, a tail and 4 zero-variance directions (like sklearn digits)."""
    ev = np.concatenate([20.0 * np.arange(1, 61) ** -1.3, np.zeros(4)])
    return Spectrum(ev, name="digits-like")


@pytest.mark.parametrize("sched,N,solver", [("sd", 5, "heun"), ("sd", 10, "dpmpp2m"), ("edm", 4, "euler"),
                                            ("rectified-flow", 6, "ddim")])
def test_sw2_optimum_beats_every_baseline_under_its_own_metric(sched, N, solver):
    sp = _digits_like()
    d = optimal_steps(get_schedule(sched), sp, N, solver=solver, metric="sw2")
    out = d.to_dict()
    assert out["metric"] == "sw2" and out["baselines"]
    assert out["sw2"] == pytest.approx(score_levels(d.sigmas, sp, solver, d.start, metric="sw2"), rel=1e-12)
    assert out["w2"] == pytest.approx(score_levels(d.sigmas, sp, solver, d.start), rel=1e-12)
    assert 0 < out["sw2_mc_se"] < 0.05 * out["sw2"]
    for name, b in out["baselines"].items():
        assert out["sw2"] <= b["sw2"] * (1 + 1e-9), name
        assert b["sw2"] == pytest.approx(score_levels(b["sigmas"], sp, solver, d.start, metric="sw2"), rel=1e-9)
    # the w2 design is no better than the sw2 design under sw2, and vice versa
    d2 = optimal_steps(get_schedule(sched), sp, N, solver=solver)
    assert d2.metric == "w2" and d2.sw2 >= d.sw2 * (1 - 1e-9) and d.w2 >= d2.w2 * (1 - 1e-9)


def test_sw2_with_a_level_model_equals_the_gaussian():
    lam = np.array([9.0, 2.0, 0.5, 0.1, 0.02])
    sp = Spectrum(np.repeat(lam, [1, 2, 3, 4, 6]))
    lam_c, cnt, _ = compress_spectrum(sp, 128)
    ls = LevelSpectra.constant(lam_c, cnt)
    a = optimal_steps(get_schedule("sd"), sp, 6, solver="dpmpp2m", metric="sw2")
    b = optimal_steps(get_schedule("sd"), ls, 6, solver="dpmpp2m", metric="sw2")
    assert b.metric == "sw2"
    np.testing.assert_allclose(b.sigmas, a.sigmas, rtol=1e-5)
    assert b.sw2 == pytest.approx(a.sw2, rel=1e-8)


def test_theory_variant_reports_sw2_and_sw2_marginal_uses_the_solver_path():
    sp = powerlaw(16, 1, 2.0, 1.0)
    d = optimal_steps(get_schedule("sd"), sp, 5, start="marginal")
    assert d.metric == "w2" and d.sw2 > 0 and all("sw2" in b for b in d.baselines.values())
    s = optimal_steps(get_schedule("sd"), sp, 5, start="marginal", metric="sw2")
    assert s.metric == "sw2" and s.sw2 <= d.sw2 * (1 + 1e-9)


def test_bad_metric_input():
    sp = powerlaw(8, 1, 2.0, 1.0)
    with pytest.raises(PifsError, match="metric"):
        optimal_steps(get_schedule("sd"), sp, 4, metric="l2")
    with pytest.raises(PifsError, match="metric"):
        score_levels(CHAIN, sp, metric="kl")
    with pytest.raises(PifsError, match="fixed_endpoints"):
        optimal_steps(get_schedule("sd"), sp, 4, start="marginal", fixed_endpoints=True, metric="sw2")
    with pytest.raises(PifsError, match="weights"):
        solver_sw2sq("ddim", CHAIN, LAM, np.ones((3, 2)))
    with pytest.raises(PifsError, match="counts"):
        sw2_weights(np.array([1.0, 0.0]))


def test_cli_metric_switch(capsys):
    argv = ["design", "steps", "--steps", "5", "--solver", "heun", "--spectrum", "powerlaw:2", "--resolution", "16",
            "--channels", "1"]
    assert main(argv + ["--metric", "sw2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metric"] == "sw2" and d["sw2"] > 0
    assert all(d["sw2"] <= b["sw2"] * (1 + 1e-9) for b in d["baselines"].values())
    assert main(argv + ["--json"]) == 0
    w = json.loads(capsys.readouterr().out)
    assert w["metric"] == "w2" and w["sw2"] >= d["sw2"] * (1 - 1e-9) and w["w2"] <= d["w2"] * (1 + 1e-9)
    assert main(argv + ["--metric", "sw2"]) == 0
    text = capsys.readouterr().out
    assert "SW2-optimal" in text and "sorted by SW2" in text
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--metric", "nope"])
    assert exc.value.code == 2
