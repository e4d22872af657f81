"""Model-aware steps from the model's own trajectories (pifskit.design.trajectory)."""

import json
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pifskit._validate import PifsError
from pifskit.chains import Chain
from pifskit.design.trajectory import (
    dp_levels,
    local_errors,
    run_teacher,
    teacher_grid,
    bootstrap_error,
    default_refine,
    trajectory_metric,
    trajectory_steps,
)
from pifskit.metrics import principal_axes_w2
from pifskit.exact_models import GaussianModel, fit_mixture_per_class
from pifskit.samplers import sample_ddim, sample_dpmpp_2m, sample_heun


def _mixture():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(-1.5, 0.3, (60, 4)), rng.normal(1.0, 0.5, (60, 4))])
    y = np.repeat([0, 1], 60)
    return fit_mixture_per_class(X, y, jitter=1e-3)


def _teacher(model, G=9, B=5):
    grid = teacher_grid(0.02, 40.0, G)
    x_T = np.random.default_rng(0).standard_normal((B, model.d))
    return run_teacher(model.denoise, x_T, grid)


def _rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2, axis=1)).mean())


def _w2(a, b):
    """The default metric written out: Gaussian W2 per coordinate in b's principal axes (eigh of the covariance)."""
    lam, V = np.linalg.eigh(np.cov(b, rowvar=False))
    keep = lam > lam.max() * 1e-9
    lam, V = lam[keep], V[:, keep]
    var = np.einsum("di,de,ei->i", V, np.cov(a, rowvar=False), V)
    return float(np.sqrt((((a.mean(0) - b.mean(0)) ** 2).sum() + ((np.sqrt(var) - np.sqrt(lam)) ** 2).sum())
                         / a.shape[1]))


def test_principal_axes_w2_closed_forms():
    rng = np.random.default_rng(5)
    R = rng.standard_normal((24, 40)) * np.linspace(3.0, 0.1, 40) + 1.0
    spread = np.sqrt(((R - R.mean(0)) ** 2).sum() / 23)  # sqrt(trace of the sample covariance)
    assert principal_axes_w2(R[rng.permutation(24)], R) == pytest.approx(0.0, abs=1e-10)  # same law
    shift = rng.standard_normal(40)
    assert principal_axes_w2(R + shift, R) == pytest.approx(np.linalg.norm(shift), rel=1e-12)
    for c in (0.0, 0.6, 1.5):  # shrink / inflate about the mean: |1 - c| sqrt(tr C)
        assert principal_axes_w2(R.mean(0) + c * (R - R.mean(0)), R) == pytest.approx(abs(1 - c) * spread, rel=1e-10)
    X = rng.standard_normal((24, 40))
    assert principal_axes_w2(X, R) == pytest.approx(_w2(X, R) * np.sqrt(40), rel=1e-8)
    # the coupling by rows bounds it: W2^2 <= n/(n-1) mean ||x_b - r_b||^2 (unbiased covariances)
    n = 24
    for Y in (X, R + 0.1 * X, R.mean(0) + 0.5 * (R - R.mean(0))):
        assert trajectory_metric(Y, R) <= np.sqrt(n / (n - 1) * np.mean((Y - R) ** 2)) + 1e-12
    assert trajectory_metric(X, R, "rms") == pytest.approx(_rms(X, R))
    assert trajectory_metric(np.full_like(X, np.nan), R) == np.inf
    with pytest.raises(PifsError, match=">= 2 samples"):
        principal_axes_w2(X[:1], R)
    with pytest.raises(PifsError, match="trajectory metric"):
        trajectory_metric(X, R, "kl")


def test_bootstrap_error_resamples_the_starts():
    rng = np.random.default_rng(11)
    R = rng.standard_normal((40, 30))
    X = R + rng.standard_normal((40, 30)) * rng.uniform(0.1, 1.0, (40, 1))  # per-start errors of unequal size
    per = np.sqrt(np.mean((X - R) ** 2, axis=1))
    out = bootstrap_error(X, R, "rms", n_boot=4000, seed=3)
    half = 0.5 * (out["ci"][1] - out["ci"][0])
    assert np.mean(out["ci"]) == pytest.approx(per.mean())  # centred on the estimate
    # the bootstrap sd of a mean over the starts: sd / sqrt(n) (ddof 0), 1.96 of it either side
    assert half == pytest.approx(1.96 * per.std() / np.sqrt(40), rel=0.08)
    same = bootstrap_error(R, R, "w2", rival=R, n_boot=50)
    assert same["ci"] == pytest.approx([0.0, 0.0], abs=1e-12) and same["difference_ci"] == pytest.approx([0, 0])
    worse = bootstrap_error(X, R, "w2", rival=R + 0.01 * (X - R), n_boot=200)
    assert worse["difference"] == pytest.approx(trajectory_metric(X, R) - trajectory_metric(R + 0.01 * (X - R), R))
    assert worse["difference_ci"][0] > 0  # a clearly worse list: the whole interval above 0


def test_teacher_grid_ends_and_pure_noise():
    g = teacher_grid(0.01, 100.0, 5)
    assert g[0] == 100.0 and g[-2] == pytest.approx(0.01) and g[-1] == 0.0
    assert np.allclose(np.diff(np.log(g[:-1])), np.log(0.01 / 100.0) / 4)
    f = teacher_grid(0.01, 100.0, 5, pure_noise=True)
    assert np.isinf(f[0]) and f[1] == 100.0 and f[-1] == 0.0 and np.all(np.diff(f[1:]) < 0)
    with pytest.raises(PifsError, match="sigma_min < sigma_max"):
        teacher_grid(1.0, 0.5)


def test_first_order_local_error_is_one_real_ddim_step():
    """C1[i, j] (Gram form) == RMS of one sample_ddim step from the teacher's X_i against X_j."""
    m = _mixture()
    t = _teacher(m)
    C1, C2, final = local_errors(t, "ddim")
    assert C2 is None
    G = t.sigmas.size - 1
    for i, j in [(0, 1), (0, 5), (2, 3), (3, 8), (6, 7)]:
        x = sample_ddim(m.denoise, t.X[i], Chain.from_sigmas(t.sigmas[[i, j]]))
        assert C1[i, j] == pytest.approx(_rms(x, t.X[j]), rel=1e-6, abs=1e-7)
    for i in (0, 4, G - 1):  # last step to 0: x_0 = D(X_i)
        x = sample_ddim(m.denoise, t.X[i], Chain.from_sigmas(np.array([t.sigmas[i], 0.0])))
        assert final[i] == pytest.approx(_rms(x, t.X[G]), rel=1e-6, abs=1e-7)
    assert np.isinf(C1[np.tril_indices(G)]).all()


def test_dpmpp2m_local_error_matches_the_multistep_formula():
    """C2[k, i, j] == RMS of k-diffusion's 2M update written out per sample, from the cached X_i, D_i, D_k."""
    m = _mixture()
    t = _teacher(m)
    _, C2, _ = local_errors(t, "dpmpp2m")
    sig = t.sigmas
    a = 1.0 / np.sqrt(1.0 + sig[:-1] ** 2)
    for k, i, j in [(0, 1, 2), (0, 3, 7), (2, 4, 5), (1, 2, 8)]:
        h, h_last = np.log(sig[i] / sig[j]), np.log(sig[k] / sig[i])
        r = h_last / h
        D = (1 + 1 / (2 * r)) * t.D[i] - (1 / (2 * r)) * t.D[k]
        x = (sig[j] / sig[i]) * (a[j] / a[i]) * t.X[i] + a[j] * (1 - np.exp(-h)) * D
        assert C2[k, i, j] == pytest.approx(_rms(x, t.X[j]), rel=1e-6, abs=1e-7)  # Gram form: ~sqrt(eps) floor
    assert np.isinf(C2[3, 2, 5]) and np.isinf(C2[1, 4, 4])


def test_heun_local_error_is_exact_when_the_predictor_lands_on_the_teacher():
    """Heun's corrector uses D_j for D(predictor): exact for a denoiser that is constant in x."""
    rng = np.random.default_rng(1)
    mu = rng.normal(size=3)

    def const(x, l):
        return np.broadcast_to(mu, x.shape).copy()

    grid = teacher_grid(0.05, 20.0, 7)
    t = run_teacher(const, rng.standard_normal((4, 3)), grid)
    C1, _, _ = local_errors(t, "heun")
    for i, j in [(0, 2), (1, 5), (3, 4)]:
        x = sample_heun(const, t.X[i], Chain.from_sigmas(grid[[i, j]]))
        assert C1[i, j] == pytest.approx(_rms(x, t.X[j]), rel=1e-6, abs=1e-7)


def _brute(C1, C2, final, N):
    G = C1.shape[0]
    best = np.inf
    for mid in combinations(range(1, G), N - 1):
        p = (0,) + mid
        c = C1[p[0], p[1]] if N > 1 else 0.0
        for q in range(2, N):
            c += C2[p[q - 2], p[q - 1], p[q]] if C2 is not None else C1[p[q - 1], p[q]]
        best = min(best, c + final[p[-1]])
    return best


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), G=st.integers(2, 7), N=st.integers(1, 5), two_step=st.booleans())
def test_dp_equals_brute_force(seed, G, N, two_step):
    N = min(N, G)
    rng = np.random.default_rng(seed)
    C1 = np.where(np.triu(np.ones((G, G)), 1) > 0, rng.random((G, G)), np.inf)
    final = rng.random(G)
    C2 = None
    if two_step:
        K, I, J = np.meshgrid(np.arange(G), np.arange(G), np.arange(G), indexing="ij")
        C2 = np.where((K < I) & (I < J), rng.random((G, G, G)), np.inf)
    idx, cost = dp_levels(C1, C2, final, N)
    assert idx[0] == 0 and idx.size == N and np.all(np.diff(idx) > 0)
    assert cost == pytest.approx(_brute(C1, C2, final, N))
    recomputed = (C1[idx[0], idx[1]] if N > 1 else 0.0) + final[idx[-1]]
    for q in range(2, N):
        recomputed += C2[idx[q - 2], idx[q - 1], idx[q]] if C2 is not None else C1[idx[q - 1], idx[q]]
    assert cost == pytest.approx(recomputed)


@pytest.mark.parametrize("solver, metric", [("ddim", "w2"), ("dpmpp2m", "w2"), ("heun", "w2"), ("ddim", "rms")])
def test_design_is_never_worse_than_a_baseline_on_its_own_metric(solver, metric):
    m = _mixture()
    N = 4
    base = {"geometric": np.append(np.geomspace(40.0, 0.02, N), 0.0),
            "late": np.append(np.geomspace(5.0, 0.05, N), 0.0)}
    r = trajectory_steps(m.denoise, m.d, (0.02, 40.0), N, solver=solver, baselines=base, n_starts=16,
                         grid_size=24, refine=15, metric=metric)
    assert r.info["metric"] == metric
    assert r.sigmas.size == N + 1 and r.sigmas[-1] == 0.0 and np.all(np.diff(r.sigmas) < 0)
    errs = r.info["baseline_errors"]
    assert set(errs) == set(base) | {"gits"}
    if solver == "ddim":  # GITS is the DP with the first-order step: the same levels for DDIM
        assert np.array_equal(r.info["gits_sigmas"], r.dp_sigmas)
    assert r.global_error <= min(min(errs.values()), r.dp_global_error) + 1e-12
    held = r.info["held_out"]
    per = 2 * N - 1 if solver == "heun" else N
    # a search move of level k reuses the best list's first calls: fewer calls than one run per evaluation
    assert 24 + 3 * per < r.model_calls < 24 + (r.info["evaluations"] + 2 * (held is not None)) * per
    # ... and changes no number: the returned levels' error, recomputed from scratch on the same starts
    x_T = np.random.default_rng([0, 7919]).standard_normal((16, m.d))
    ref = run_teacher(m.denoise, x_T, teacher_grid(0.02, 40.0, 24)).X[-1]
    sampler = {"ddim": sample_ddim, "heun": sample_heun, "dpmpp2m": sample_dpmpp_2m}[solver]
    x0 = sampler(m.denoise, x_T, _ch(r.sigmas))
    assert r.global_error == pytest.approx((_w2 if metric == "w2" else _rms)(x0, ref), rel=1e-8)
    lo, hi = r.info["error_ci"]
    assert lo <= r.global_error <= hi
    vs = r.info["vs_best_other"]  # the best list with other levels than the result's, on the same starts
    others = {k: v for k, v in errs.items() if not np.array_equal(
        np.asarray(base.get(k, r.info["gits_sigmas"]), float), r.sigmas)}
    assert vs["rival"] == min(others, key=others.get)
    assert vs["difference"] == pytest.approx(r.global_error - others[vs["rival"]], rel=1e-9, abs=1e-12)
    assert r.info["rms"] == pytest.approx(_rms(x0, ref), rel=1e-12)


def test_refinement_kept_only_if_it_also_wins_on_the_held_out_starts():
    m = _mixture()
    N, V = 4, 12
    base = {"geometric": np.append(np.geomspace(40.0, 0.02, N), 0.0)}
    r = trajectory_steps(m.denoise, m.d, (0.02, 40.0), N, solver="ddim", baselines=base, n_starts=16,
                         grid_size=24, refine=15, validation=V)
    held, hist = r.info["held_out"], r.info["history"]
    assert held is not None and held["starts"] == V and min(hist) < hist[0]  # the search improved in-sample
    json.dumps(r.info)  # plain Python numbers: the CLI and the benches write it as JSON
    # the held-out errors, recomputed: the teacher and both chains run again on the [seed, 7920] starts
    x_val = np.random.default_rng([0, 7920]).standard_normal((V, m.d))
    ref = run_teacher(m.denoise, x_val, teacher_grid(0.02, 40.0, 24)).X[-1]
    start = np.asarray(r.dp_sigmas if r.info["start_schedule"] == "dp" else base["geometric"])
    assert held["start"] == pytest.approx(_w2(sample_ddim(m.denoise, x_val, _ch(start)), ref), rel=1e-8)
    if held["kept"]:
        assert held["refined"] <= held["start"] and r.global_error == pytest.approx(min(hist))
        assert held["refined"] == pytest.approx(_w2(sample_ddim(m.denoise, x_val, _ch(r.sigmas)), ref), rel=1e-8)
    else:
        assert held["refined"] > held["start"] and np.array_equal(r.sigmas, start) and r.global_error == hist[0]
    off = trajectory_steps(m.denoise, m.d, (0.02, 40.0), N, solver="ddim", baselines=base, n_starts=16,
                           grid_size=24, refine=15, validation=0)
    assert off.info["held_out"] is None and off.global_error == pytest.approx(min(hist))


def _ch(sig):
    with np.errstate(divide="ignore"):
        return Chain(-2.0 * np.log(np.asarray(sig, float)))


def test_linear_model_levels_beat_geometric_and_refinement_helps():
    """Gaussian data: the DP + refinement reaches a global error well below uniform log-sigma levels."""
    g = GaussianModel.diagonal(np.array([4.0, 1.0, 0.25, 0.01]))
    base = {"uniform-logsnr": np.append(np.geomspace(80.0, 0.01, 5), 0.0)}
    r = trajectory_steps(g.denoise, g.d, (0.01, 80.0), 5, solver="ddim", baselines=base, n_starts=64,
                         grid_size=60, refine=30)
    assert r.global_error < 0.7 * r.info["baseline_errors"]["uniform-logsnr"]
    assert r.info["history"] == sorted(r.info["history"], reverse=True)


def test_bad_arguments():
    m = _mixture()
    with pytest.raises(PifsError, match="trajectory solver"):
        trajectory_steps(m.denoise, m.d, (0.02, 40.0), 3, solver="dpmpp3m")
    with pytest.raises(PifsError, match="teacher grid"):
        trajectory_steps(m.denoise, m.d, (0.02, 40.0), 30, grid_size=10)


# --- CLI: pifskit design steps --model ENTRY (default --model-method trajectory) ---

def _cli_json(capsys, argv):
    from pifskit.cli import main

    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_trajectory_gmm_digits(capsys):
    out = _cli_json(capsys, ["design", "steps", "--model", "gmm:digits", "--schedule", "sd", "--steps", "3",
                             "--solver", "dpmpp2m", "--trajectory-grid", "20", "--trajectory-starts", "8",
                             "--trajectory-refine", "6"])
    assert out["model_method"] == "trajectory" and out["metric"] == "trajectory" and out["solver"] == "dpmpp2m"
    assert out["trajectory_metric"] == "w2" and out["rms"] > 0 and all(
        (b["rms"] is None) == (b["w2"] is None) for b in out["baselines"].values())
    assert len(out["sigmas"]) == 4 and out["sigmas"][-1] == 0.0 and out["timesteps"] is not None
    assert out["baselines"] and all(out["w2"] <= b["w2"] + 1e-12 for b in out["baselines"].values())
    assert out["error"] == out["w2"] and out["error"] <= out["dp_error"] + 1e-12
    assert out["error_ci"][0] <= out["error"] <= out["error_ci"][1]
    rival = out["vs_best_other"]["rival"]
    assert out["vs_best_other"]["difference"] == pytest.approx(out["error"] - out["baselines"][rival]["error"])
    n_base = len(out["baselines"])
    assert out["model_calls"] <= 20 + (out["trajectory"]["evaluations"] + 2 * bool(out["trajectory"]["held_out"])) * 3
    assert out["trajectory"]["evaluations"] <= n_base + 1 + 6 + 1


def test_cli_trajectory_checkpoint_uses_its_schedule(tmp_path, capsys):
    import torch

    from pifskit.torch.checkpoint import save_checkpoint
    from pifskit.torch.models import build_model, default_config

    cfg = default_config("dit", (1, 8, 8), "epsilon")
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    path = save_checkpoint(tmp_path / "run", {
        "model_config": cfg, "model_state": state, "ema_state": state, "step": 0, "hparams": {}, "data": {},
        "image_shape": [1, 8, 8], "schedule": "sd", "prediction": "epsilon"})
    out = _cli_json(capsys, ["design", "steps", "--model", str(path), "--steps", "2", "--solver", "ddim",
                             "--trajectory-grid", "12", "--trajectory-starts", "4", "--trajectory-refine", "3"])
    from pifskit.design.baselines import design_range
    from pifskit.schedules import get_schedule

    smin, smax = design_range(get_schedule("sd"))  # the checkpoint's training schedule, not the CLI default
    assert smin <= out["sigmas"][-2] < out["sigmas"][0] <= smax * (1 + 1e-9)
    assert len(out["timesteps"]) == 2 and out["timesteps"][0] > out["timesteps"][1]
    assert all(out["w2"] <= b["w2"] + 1e-12 for b in out["baselines"].values())


@pytest.mark.parametrize("solver", ["euler", "dpmpp2m"])
def test_cli_trajectory_flow_schedule_starts_from_pure_noise(capsys, solver):
    out = _cli_json(capsys, ["design", "steps", "--model", "gmm:digits", "--schedule", "sd3", "--steps", "3",
                             "--solver", solver, "--trajectory-grid", "16", "--trajectory-starts", "8"])
    assert out["flow_sigmas"] is not None and out["flow_sigmas"][0] == 1.0 and len(out["flow_sigmas"]) == 3
    assert all(0 < v <= 1 for v in out["flow_sigmas"]) and out["timesteps"] is None
    assert all(out["error"] <= b["error"] + 1e-12 for b in out["baselines"].values() if b["error"] is not None)


def test_cli_trajectory_unsupported_solver_exit_2(capsys):
    from pifskit.cli import main

    assert main(["design", "steps", "--model", "gmm:digits", "--steps", "3", "--solver", "ipndm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "supports --solver ddim, euler, heun, dpmpp2m" in err[0]


def test_default_refine_spends_about_400_calls_beyond_10_nfe():
    assert [default_refine("ddim", n) for n in (1, 5, 10, 11, 20, 40, 100)] == [40, 40, 40, 37, 20, 10, 4]
    assert default_refine("dpmpp2m", 20) == default_refine("euler", 20) == 20
    assert [default_refine("heun", n) for n in (3, 5, 6, 10, 20)] == [40, 40, 37, 22, 11]  # NFE 2N - 1
    for solver in ("ddim", "heun"):
        for n in range(1, 120):
            nfe = 2 * n - 1 if solver == "heun" else n
            r = default_refine(solver, n)
            assert 1 <= r <= 40 and (r == 40 or (r - 1) * nfe < 400 <= r * nfe)
    with pytest.raises(PifsError):
        default_refine("unipc", 10)


def test_trajectory_steps_uses_the_default_budget():
    m = _mixture()
    kw = dict(n_starts=8, grid_size=16, validation=0)
    auto = trajectory_steps(m.denoise, m.d, (0.02, 40.0), 12, **kw)
    assert auto.info["refine"] == default_refine("ddim", 12) == 34
    explicit = trajectory_steps(m.denoise, m.d, (0.02, 40.0), 12, refine=34, **kw)
    assert np.array_equal(auto.sigmas, explicit.sigmas) and auto.model_calls == explicit.model_calls
    assert trajectory_steps(m.denoise, m.d, (0.02, 40.0), 12, refine=0, **kw).info["history"] == \
        [auto.info["history"][0]]


def test_cli_trajectory_default_budget_and_bad_budget(capsys):
    out = _cli_json(capsys, ["design", "steps", "--model", "gmm:digits", "--schedule", "sd", "--steps", "12",
                             "--trajectory-grid", "14", "--trajectory-starts", "4", "--trajectory-validation", "0"])
    assert out["trajectory"]["refine"] == default_refine("ddim", 12) == 34
    from pifskit.cli import main

    assert main(["design", "steps", "--model", "gmm:digits", "--steps", "3", "--trajectory-refine", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trajectory-refine must be >= 0" in err[0]
