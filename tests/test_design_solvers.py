"""Solver-aware criterion III: closed forms against the samplers, gradients, the charged start, flow/EDM ranges,
baselines, and the contract that the reported optimum is never beaten by a baseline under its own metric."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pifskit import PifsError
from pifskit.chains import Chain
from pifskit.cli import main
from pifskit.exact_models.gaussian import GaussianModel
from pifskit.design._binning import compress_spectrum
from pifskit.design.baselines import (
    _dmn_objective,
    baseline_levels,
    beta_sigmas,
    dmn_sigmas,
    kl_optimal_sigmas,
)
from pifskit.design.solvers import SOLVERS, output_gain, solver_kl, solver_w2sq
from pifskit.design.steps import _untie, _w2sq, optimal_steps, score_levels
from pifskit.samplers import SAMPLERS
from pifskit.schedules import get_schedule
from pifskit.spectra import Spectrum, powerlaw

LAM = np.array([0.01, 0.3, 1.0, 4.0, 30.0])
CHAINS = [np.array([14.6, 5.0, 1.3, 0.4, 0.1, 0.02, 0.0]), np.array([np.inf, 5.0, 1.3, 0.4, 0.1, 0.0]),
          np.array([3.0, 0.0]), np.array([np.inf, 2.0, 0.5, 0.0]), np.array([80.0, 30.0, 9.0, 2.5, 0.0])]


def _chain(sig):
    with np.errstate(divide="ignore"):
        return Chain(-2.0 * np.log(sig))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("k", range(len(CHAINS)))
def test_closed_form_equals_the_sampler_run_by_exact_linear_algebra(solver, k):
    # rotated Gaussian: the sampler maps x_T = I (VP, the N(0, I) prior's basis) to U diag(m) U^T exactly
    rng = np.random.default_rng(k)
    U, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    g = GaussianModel(np.zeros(5), LAM, U)
    sig = CHAINS[k]
    out = SAMPLERS[solver](g.denoise, np.eye(5), _chain(sig))
    m = output_gain(solver, sig, LAM, "prior")
    np.testing.assert_allclose(out, U @ np.diag(m) @ U.T, atol=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("start", ["prior", "prior-ve", "marginal"])
def test_gradient_matches_finite_differences(solver, start):
    for sig in (CHAINS[0], CHAINS[1]):
        _, grad = solver_w2sq(solver, sig, LAM, np.ones(5), start, grad=True)
        num = np.zeros(sig.size - 1)
        for j in range(sig.size - 1):
            if np.isinf(sig[j]):
                continue
            hi, lo = sig.copy(), sig.copy()
            hi[j] *= np.exp(1e-6)
            lo[j] *= np.exp(-1e-6)
            num[j] = (solver_w2sq(solver, hi, LAM, np.ones(5), start)
                      - solver_w2sq(solver, lo, LAM, np.ones(5), start)) / 2e-6
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7 * np.abs(num).max())


@pytest.mark.parametrize("start", ["prior", "marginal", "prior-ve"])
def test_ddim_engine_equals_the_product_of_cosines(start):
    # independent route: the theory's closed form prod cos(Delta psi) with the start factor
    for sig in (CHAINS[0], CHAINS[4]):
        assert solver_w2sq("ddim", sig, LAM, np.ones(5), start) == pytest.approx(
            _w2sq(sig, LAM, np.ones(5), start), rel=1e-12)
    assert solver_w2sq("euler", CHAINS[0], LAM, np.ones(5)) == solver_w2sq("ddim", CHAINS[0], LAM, np.ones(5))


def test_kl_closed_form_from_the_sampled_variance():
    g = GaussianModel.diagonal(LAM)
    sig = CHAINS[0]
    out = SAMPLERS["heun"](g.denoise, np.eye(5), _chain(sig))
    v = np.diag(out) ** 2
    kl = 0.5 * np.sum(v / LAM - 1 - np.log(v / LAM))
    assert solver_kl("heun", sig, LAM, np.ones(5), "prior") == pytest.approx(kl, rel=1e-10)


def test_pure_noise_chain_of_one_step_outputs_zero_and_bad_chains_raise():
    assert np.all(output_gain("dpmpp2m", [np.inf, 0.0], LAM) == 0)
    with pytest.raises(PifsError, match="lands clean"):
        output_gain("ddim", [3.0, 1.0], LAM)
    with pytest.raises(PifsError, match="decreasing"):
        output_gain("ddim", [3.0, 3.0, 0.0], LAM)
    with pytest.raises(PifsError, match="solver"):
        output_gain("unipc", [3.0, 0.0], LAM)


def test_untie_stays_inside_the_range():
    # issue 9 item 12: the old _untie's two eps * arange lines cancelled, leaving ties and levels below sigma_min
    for levels in ([10.0, 1.0, 1.0, 1.0], [10.0, 10.0, 10.0, 5.0, 5.0, 1.0, 1.0], [10.0] * 5):
        out = _untie(np.array(levels), 1.0, 10.0)
        assert (np.diff(out) < 0).all()
        assert out.min() >= 1.0 and out.max() <= 10.0


# ---------------------------------------------------------------------------
# the design
# ---------------------------------------------------------------------------

SP = powerlaw(16, 2, 1.5, 0.7)


@pytest.mark.parametrize("solver", ["ddim", "heun", "dpmpp2m", "dpmpp3m", "ipndm"])
def test_optimum_beats_every_baseline_and_is_a_local_minimum(solver):
    d = optimal_steps(get_schedule("sd"), SP, 6, solver=solver)
    assert d.solver == solver and d.start == "prior" and d.sigmas.size == 7 and d.sigmas[-1] == 0.0
    assert {"trailing", "leading", "linspace", "uniform-logsnr", "karras-rho7", "kl-optimal", "beta-0.6", "dmn",
            "ays-sd15", "ays-sdxl"} <= set(d.baselines)
    for name, b in d.baselines.items():
        assert d.w2 <= b["w2"], name
        assert b["w2"] == pytest.approx(score_levels(b["sigmas"], SP, solver), rel=1e-12)
    assert d.w2 == pytest.approx(score_levels(d.sigmas, SP, solver), rel=1e-12)
    # sigma_0 = sigma_max (samplers' start); no single move of a free level by 1 % improves the optimum
    noisy = d.sigmas[:-1]
    assert noisy[0] == d.sigma_max
    for j in range(1, noisy.size):
        for f in (0.99, 1.01):
            trial = noisy.copy()
            trial[j] *= f
            if (np.diff(trial) < 0).all() and trial[0] <= d.sigma_max and trial[-1] >= d.sigma_min:
                assert score_levels(np.r_[trial, 0.0], SP, solver) >= d.w2 * (1 - 1e-6)


@pytest.mark.parametrize("solver", ["dpmpp2m", "dpmpp3m", "ipndm"])
def test_integer_timesteps_keep_the_multistep_gap_floor(solver):
    # the timestep descent used to ignore the floor the continuous optimum keeps: DPM++(3M) at N = 20 on sd
    # ended with timesteps 37, 36, 35, 34 (gaps 0.02 in log sigma, floor 0.16) and 999, 993
    sched = get_schedule("sd")
    d = optimal_steps(sched, powerlaw(64, 4, 1.5, 1.0), 20, solver=solver)
    floor = np.log(d.sigma_max / d.sigma_min) * 0.5 / 20
    gaps = lambda ts: -np.diff(np.log(sched.sigmas_table[ts]))  # noqa: E731
    from pifskit.design.steps import timesteps_from_sigmas

    start = timesteps_from_sigmas(sched, d.sigmas[:-1])
    # no gap shrinks below the floor: the descent only ever moves a level away from a sub-floor gap
    assert np.sum(gaps(d.timesteps) < floor) <= np.sum(gaps(start) < floor)
    assert np.all((gaps(d.timesteps) >= floor) | (gaps(d.timesteps) >= gaps(start).min()))


def test_charged_start_no_longer_rewards_a_late_start():
    # issue 11: under the marginal start, 'leading' beats the theory's optimum at N = 5; charged, it cannot
    sp = powerlaw(64, 4, 1.5, 1.0)
    theory = optimal_steps(get_schedule("sd"), sp, 5, start="marginal")
    assert theory.baselines["leading"]["w2"] < theory.w2
    charged = optimal_steps(get_schedule("sd"), sp, 5)
    assert all(charged.w2 <= b["w2"] for b in charged.baselines.values())


SCHEDULES = ["sd", "ddpm", "cosine", "edm", "edm:0.002:700", "sd3", "flux", "flux:512", "rectified-flow"]


@settings(max_examples=8, deadline=None)
@given(sched=st.sampled_from(SCHEDULES), N=st.integers(1, 100), solver=st.sampled_from(SOLVERS),
       exponent=st.floats(0.5, 3.0))
def test_property_optimum_never_beaten_by_a_baseline(sched, N, solver, exponent):
    sp = powerlaw(8, 1, exponent, 0.5)
    # a capped optimiser budget keeps the test fast; the guarantee must hold for any budget (starts + guard)
    d = optimal_steps(get_schedule(sched), sp, N, solver=solver, refine_timesteps=False, maxiter=60)
    assert d.sigmas.size == N + 1 and d.sigmas[-1] == 0.0 and (np.diff(d.sigmas) < 0).all()
    assert np.isfinite(d.w2) and d.baselines
    for name, b in d.baselines.items():
        assert b["sigmas"].size == N + 1 and b["sigmas"][-1] == 0.0, name
        assert d.w2 <= b["w2"], name


def test_flow_schedule_hands_diffusers_the_unshifted_sigmas():
    d = optimal_steps(get_schedule("sd3"), SP, 8, solver="euler")
    assert np.isinf(d.sigmas[0]) and d.flow_sigmas[0] == 1.0 and d.flow_sigmas.size == 8
    assert ((d.flow_sigmas > 0) & (d.flow_sigmas <= 1)).all() and (np.diff(d.flow_sigmas) < 0).all()
    np.testing.assert_allclose(d.flow_sigmas[1:], d.sigmas[1:-1] / (1 + d.sigmas[1:-1]), rtol=1e-12)
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(sigmas=d.flow_sigmas_unshifted.tolist())
    np.testing.assert_allclose(sched.sigmas.numpy()[:-1], d.flow_sigmas, rtol=1e-5)
    assert sched.sigmas.numpy()[-1] == 0.0
    # the flow baseline equals diffusers' own default levels (it shifts sigma_min twice)
    sched.set_timesteps(8)
    flow_default = d.baselines["flow-default"]["sigmas"]
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(sched.sigmas.numpy()[1:-1], flow_default[1:-1] / (1 + flow_default[1:-1]),
                                   rtol=1e-5)


def test_edm_range_and_prior_ve_start():
    d = optimal_steps(get_schedule("edm:0.002:700"), SP, 10, solver="heun")
    assert d.start == "prior-ve" and d.sigma_max == 700.0 and d.sigma_min == 0.002
    assert 0.002 <= d.sigmas[-2] and d.sigmas[0] <= 700.0
    assert "ays-svd" in d.baselines and d.w2 <= d.baselines["ays-svd"]["w2"]


def test_baseline_formulas():
    np.testing.assert_allclose(np.diff(np.arctan(kl_optimal_sigmas(0.03, 14.6, 7))),
                               np.full(6, (np.arctan(0.03) - np.arctan(14.6)) / 6), rtol=1e-12)
    b = beta_sigmas(0.03, 14.6, 5)
    assert b[0] == pytest.approx(14.6) and b[-1] == pytest.approx(0.03)
    # Beta(0.6, 0.6) is symmetric: the middle level is the midpoint in sigma
    assert b[2] == pytest.approx((14.6 + 0.03) / 2)
    x = dmn_sigmas(0.03, 14.6, 8)
    assert x.size == 9 and x[0] == pytest.approx(14.6) and x[-1] == pytest.approx(0.03) and (np.diff(x) < 0).all()
    uniform = np.linspace(-np.log(14.6), -np.log(0.03), 9)
    assert _dmn_objective(-np.log(x)) < _dmn_objective(uniform)
    base = baseline_levels(get_schedule("sd3"), 6)
    assert set(base) == {"flow-default", "karras-rho7", "exponential", "beta-0.6", "kl-optimal"}
    assert all(np.isinf(v[0]) for v in base.values())


def _dmn_bound_loop(lp):
    """DMN's bound written step by step (independent of the batched implementation)."""
    N = lp.size - 1
    h, e = np.diff(lp), np.exp(lp)
    err = np.sqrt(1 + np.exp(-2 * lp)) / (1 + np.exp(2 * lp))
    H0 = np.expm1(h)
    H1 = np.exp(h) * h - H0
    H2 = np.exp(h) * h * h - 2 * H1
    res, c = 0.0, np.zeros(N + 1)
    for s in range(N):
        if s in (0, N - 1):
            res += abs((e[s + 1] - e[s]) * err[s])
            continue
        if s in (1, N - 2):
            b = h[s - 1]
            J = {s - 1: -e[s] * H1[s] / b, s: e[s] * (H1[s] + b * H0[s]) / b}
        else:
            a, b = h[s - 2], h[s - 1]
            J = {s - 2: e[s] * (H2[s] + b * H1[s]) / (a * (a + b)),
                 s - 1: -e[s] * (H2[s] + (a + b) * H1[s]) / (a * b),
                 s: e[s] * (H2[s] + (a + 2 * b) * H1[s] + b * (a + b) * H0[s]) / (b * (a + b))}
        if s >= 3:
            for n, j in J.items():
                c[n] += err[n] * j
        else:
            res += np.sqrt(sum((err[n] * j) ** 2 for n, j in J.items()))
    return res + np.abs(c).sum()


@pytest.mark.parametrize("N", [1, 2, 3, 4, 5, 8, 20])
def test_dmn_bound_batched_equals_the_step_by_step_sum(N):
    lp = np.sort(np.random.default_rng(N).uniform(-3, 4, N + 1))
    assert _dmn_objective(lp) == pytest.approx(_dmn_bound_loop(lp), rel=1e-12)


def test_solver_bins_agree_with_exact_spectrum():
    rng = np.random.default_rng(1)
    sp = Spectrum(np.exp(rng.normal(-2.0, 2.0, 5000)))
    sig = np.r_[np.exp(np.linspace(np.log(14.6), np.log(0.03), 10)), 0.0]
    lam, cnt, _ = compress_spectrum(sp, 10 ** 6)
    exact = np.sqrt(solver_w2sq("dpmpp2m", sig, lam, cnt))
    assert score_levels(sig, sp, "dpmpp2m") == pytest.approx(exact, rel=2e-3)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def _json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_contract_flow_edm_and_npz_data(capsys, tmp_path):
    d = _json(capsys, "design", "steps", "--schedule", "sd3", "--steps", "6", "--solver", "heun", "--json",
              "--resolution", "8")
    assert d["solver"] == "heun" and d["start"] == "prior" and d["timesteps"] is None
    assert d["sigmas"][0] == "inf" and d["sigmas"][-1] == 0.0 and len(d["sigmas"]) == 7
    assert d["flow_sigmas"][0] == 1.0 and len(d["flow_sigmas"]) == 6
    assert all(d["w2"] <= b["w2"] for b in d["baselines"].values())
    d = _json(capsys, "design", "steps", "--schedule", "edm:0.002:700", "--steps", "5", "--json", "--resolution", "8")
    assert d["start"] == "prior-ve" and d["sigmas"][0] <= 700.0
    X = np.random.default_rng(0).normal(size=(200, 12)) * np.linspace(2.0, 0.1, 12)
    np.savez(tmp_path / "x.npz", images=X)
    d = _json(capsys, "design", "steps", "--steps", "4", "--solver", "dpmpp2m", "--data", f"npz:{tmp_path / 'x.npz'}",
              "--json")
    assert d["spectrum_source"].startswith("data npz") and len(d["timesteps"]) == 4
    assert all(d["w2"] <= b["w2"] for b in d["baselines"].values())
    assert main(["design", "steps", "--data", f"npz:{tmp_path / 'missing.npz'}"]) == 2
    assert main(["design", "steps", "--steps", "4", "--solver", "heun", "--fixed-endpoints"]) == 2
