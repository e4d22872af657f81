"""`pifskit geometry` / `pifskit lyapunov` JSON against an independent re-computation, and CLI bad input.

The re-computation uses only the command's own output (`alpha_bar`, `eigenvalues`)
and the plain formulas of theory.md sections 2-5 (a = sqrt(alpha_bar),
s = sqrt(1 - alpha_bar), c = s_s/s_t, d = a_s - a_t s_s/s_t, ...), never pifskit.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pifskit.cli import main

RTOL = 1e-9


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------

def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `pifskit argv` in-process; returns (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return int(code), out, err


def as_floats(values) -> np.ndarray:
    """JSON numbers back to floats ('inf' / '-inf' / 'nan' strings included)."""
    return np.array([float(v) for v in values], dtype=float)


def cli_json(argv: list[str], capsys) -> dict:
    code, out, err = run_cli(argv + ["--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def direct_steps(alpha_bar: np.ndarray) -> dict:
    """c, d, L*, lambda* straight from the definitions (no angles, no pifskit)."""
    ab = np.asarray(alpha_bar, dtype=float)
    a, s = np.sqrt(ab), np.sqrt(1.0 - ab)  # alpha_bar = 1 gives s = 0 exactly
    at, as_, st_, ss = a[:-1], a[1:], s[:-1], s[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = ss / st_
        d = as_ - at * ss / st_
        L = (1.0 - c) / d
        lam = st_ * (st_ - ss) / (at * (as_ - at))  # a_t = 0 (pure noise): +inf
    return {"c": c, "d": d, "L_star": L, "lambda_star": lam}


def direct_f(alpha_bar: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """f_t(lambda) = (a_s a_t lambda + s_s s_t) / (a_t^2 lambda + s_t^2), shape (N, K)."""
    ab = np.asarray(alpha_bar, dtype=float)
    a, s = np.sqrt(ab), np.sqrt(1.0 - ab)
    at, as_, st_, ss = (v[:, None] for v in (a[:-1], a[1:], s[:-1], s[1:]))
    lam = np.asarray(lam, dtype=float)[None, :]
    return (as_ * at * lam + ss * st_) / (at**2 * lam + st_**2)


def direct_Lambda(alpha_bar, lam) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(direct_f(alpha_bar, lam)).sum(axis=0)


def direct_lambda_2star(alpha_bar) -> float:
    """Plain bisection in log(lambda) on the increasing Lambda (to float resolution)."""
    lo, hi = -60.0, 60.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(direct_Lambda(alpha_bar, [math.exp(mid)])[0]) < 0:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def direct_boundary(alpha_bar) -> int:
    """Steps whose mid-angle exceeds pi/4 (phi = atan(s/a))."""
    ab = np.asarray(alpha_bar, dtype=float)
    phi = np.arctan2(np.sqrt(1.0 - ab), np.sqrt(ab))
    return int(np.count_nonzero(0.5 * (phi[:-1] + phi[1:]) > math.pi / 4))


def classical_ky(exponents) -> float:
    """D_KY = k + S_k / |Lambda_{k+1}|, k the largest index with a non-negative partial sum."""
    ex = sorted(exponents, reverse=True)
    total, k, S = 0.0, 0, 0.0
    for i, e in enumerate(ex):
        total += e
        if total >= 0:
            k, S = i + 1, total
    if ex[0] < 0:
        return 0.0
    if k == len(ex):
        return float(len(ex))
    return k + S / abs(ex[k])


def assert_close(actual, expected, rtol=RTOL, atol=1e-12):
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape
    assert (np.isinf(actual) == np.isinf(expected)).all()
    fin = np.isfinite(expected)
    np.testing.assert_array_equal(actual[~fin], expected[~fin])
    np.testing.assert_allclose(actual[fin], expected[fin], rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------------------------

CHAINS = [
    ["--schedule", "sd", "--steps", "10", "--spacing", "trailing"],
    ["--schedule", "sd", "--steps", "50", "--spacing", "leading"],
    ["--schedule", "ddpm", "--steps", "25", "--spacing", "linspace"],
    ["--schedule", "cosine", "--steps", "20", "--spacing", "uniform"],
    ["--schedule", "edm", "--steps", "12", "--spacing", "karras"],
    ["--schedule", "sd3", "--steps", "8", "--spacing", "uniform"],
    ["--schedule", "sd", "--steps", "10", "--spacing", "ays-sd15"],
    ["--schedule", "sd", "--sigmas", "14.6,6,2.5,1,0.4,0.1"],  # does not land on the clean endpoint
    ["--schedule", "sd", "--timesteps", "999,750,500,250,20"],
]


@pytest.mark.parametrize("opts", CHAINS, ids=lambda o: " ".join(o[1:]))
def test_geometry_json_matches_direct_formulas(opts, capsys):
    out = cli_json(["geometry", *opts, "--lambda-points", "41"], capsys)
    ab = as_floats(out["alpha_bar"])
    N = out["n_steps"]
    assert ab.shape == (N + 1,) and len(out["L_star"]) == N and len(out["lambda_star"]) == N
    assert (np.diff(ab) > 0).all()  # noisiest first
    assert out["lands_clean"] == (ab[-1] == 1.0)
    assert out["starts_from_noise"] == (ab[0] == 0.0)
    assert len(out["logsnr"]) == N + 1 and len(out["sigmas"]) == N + 1
    ts = out["timesteps"]
    assert ts is None or len(ts) == N

    ref = direct_steps(ab)
    for key in ("c", "d", "L_star", "lambda_star"):
        assert_close(as_floats(out[key]), ref[key])
    # theory: lambda* > 1 for every VP step; L* in (0, 1]
    assert (as_floats(out["lambda_star"]) > 1).all()
    L = as_floats(out["L_star"])
    assert ((L > 0) & (L <= 1 + 1e-12)).all()

    lam = as_floats(out["lambda_grid"])
    assert lam.size == 41
    assert_close(np.array(out["f"], dtype=float), direct_f(ab, lam))
    assert_close(as_floats(out["Lambda"]), direct_Lambda(ab, lam), atol=1e-11)

    l2 = float(out["lambda_2star"])
    assert l2 == pytest.approx(direct_lambda_2star(ab), rel=RTOL)
    assert out["regime_boundary_step"] == direct_boundary(ab)


def test_geometry_final_clean_step_is_the_denoiser(capsys):
    out = cli_json(["geometry", "--schedule", "sd", "--steps", "10"], capsys)
    assert out["lands_clean"] is True
    assert out["c"][-1] == 0.0 and out["d"][-1] == pytest.approx(1.0, abs=1e-15)
    assert out["L_star"][-1] == pytest.approx(1.0, abs=1e-15)


def test_geometry_pure_noise_start(capsys):
    out = cli_json(["geometry", "--schedule", "sd3", "--steps", "6"], capsys)
    assert out["starts_from_noise"] is True and out["alpha_bar"][0] == 0.0
    assert out["lambda_star"][0] == "inf"  # non-finite floats are written as strings
    # from pure noise every direction contracts by s_s
    ab = as_floats(out["alpha_bar"])
    assert out["c"][0] == pytest.approx(math.sqrt(1 - ab[1]), rel=1e-12)


def test_geometry_continuum_limit(capsys):
    """Fine chains: L*_t -> a_t, lambda*_t -> 1 and lambda** -> 1 (theory sections 2-3)."""
    out = cli_json(["geometry", "--schedule", "sd3", "--steps", "400", "--spacing", "logsnr"], capsys)
    ab = as_floats(out["alpha_bar"])
    L = as_floats(out["L_star"])
    np.testing.assert_allclose(L[1:-1], np.sqrt(ab[1:-2]), atol=0.02)
    assert float(out["lambda_2star"]) == pytest.approx(1.0, abs=0.05)


def test_geometry_text_table(capsys):
    code, out, err = run_cli(["geometry", "--steps", "4"], capsys)
    assert code == 0 and err == ""
    assert "L*" in out and "regime boundary step" in out
    assert out.count("\n") >= 8


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.001, 0.999), min_size=2, max_size=30, unique=True), st.booleans())
def test_geometry_result_property(vals, clean):
    """Random alpha_bar chains through the command's result function: the same direct formulas hold."""
    from pifskit.chains import Chain
    from pifskit.cli.geometry_cmd import geometry_result

    ab = np.sort(np.asarray(vals))
    if np.diff(ab).min() < 1e-6:
        return
    if clean:
        ab = np.append(ab, 1.0)
    chain = Chain.from_alpha_bar(ab)
    res = geometry_result(chain, np.logspace(-3, 3, 7))
    abj = np.asarray(res["alpha_bar"])
    ref = direct_steps(abj)
    for key in ("c", "d", "L_star", "lambda_star"):
        np.testing.assert_allclose(res[key], ref[key], rtol=1e-8)
    f = np.asarray(res["f"])
    assert (np.diff(f, axis=1) > 0).all()  # f increasing in lambda


# ---------------------------------------------------------------------------------------------------------------
# lyapunov
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opts", [
    ["--schedule", "sd", "--steps", "10"],
    ["--schedule", "cosine", "--steps", "15", "--spacing", "logsnr", "--resolution", "16", "--channels", "1",
     "--spectrum", "powerlaw:1.5", "--pixel-variance", "1.0"],
    ["--schedule", "sd", "--sigmas", "14.6,6,2.5,1,0.4,0.1", "--resolution", "8"],
], ids=["sd-default", "cosine-logsnr-16", "sd-sigmas-not-clean"])
def test_lyapunov_json_matches_direct_formulas(opts, capsys):
    out = cli_json(["lyapunov", *opts], capsys)
    ab = as_floats(out["alpha_bar"])
    ev = as_floats(out["eigenvalues"])
    ex = as_floats(out["exponents"])
    assert ev.size == ex.size == out["d"]
    assert (np.diff(ev) <= 0).all() and (np.diff(ex) <= 0).all()  # both descending, index-matched
    assert_close(ex, direct_Lambda(ab, ev))
    assert out["kaplan_yorke"] == pytest.approx(classical_ky(ex), rel=RTOL)
    assert 0 <= out["kaplan_yorke"] <= out["d"]
    assert out["n_positive"] == int((ex > 0).sum())


def test_lyapunov_default_is_powerlaw_64(capsys):
    out = cli_json(["lyapunov"], capsys)
    ev = as_floats(out["eigenvalues"])
    assert out["d"] == 64 * 64 * 3
    assert ev.mean() == pytest.approx(np.mean((2 * np.array([0.229, 0.224, 0.225])) ** 2), rel=1e-12)  # 0.20432
    # positive exponents are exactly the directions above lambda** (Lambda is increasing)
    geo = cli_json(["geometry"], capsys)
    assert out["n_positive"] == int((ev > float(geo["lambda_2star"])).sum())


@pytest.mark.parametrize("eigs,expected", [
    ([1e4, 3e3, 1e3], "d"),         # every direction expanded: KY = d
    ([1e-3, 1e-4, 1e-5], 0.0),      # every direction contracted: KY = 0
    ([50.0, 3.0, 1.2, 0.7, 0.01, 0.0], None),
])
def test_lyapunov_file_spectrum_edge_cases(eigs, expected, tmp_path, capsys):
    path = tmp_path / "eigs.txt"
    np.savetxt(path, eigs)
    out = cli_json(["lyapunov", "--spectrum", f"file:{path}", "--steps", "10"], capsys)
    ex = as_floats(out["exponents"])
    assert_close(ex, direct_Lambda(as_floats(out["alpha_bar"]), as_floats(out["eigenvalues"])))
    ky = out["kaplan_yorke"]
    if expected == "d":
        assert ky == len(eigs)
    elif expected is not None:
        assert ky == expected
    else:
        assert ex[-1] == -np.inf  # lambda = 0 on a clean landing: f = 0
        assert ky == pytest.approx(classical_ky(ex), rel=RTOL)
        assert 0 < ky < len(eigs)


def test_lyapunov_text(capsys):
    code, out, err = run_cli(["lyapunov", "--resolution", "8", "--top", "3"], capsys)
    assert code == 0 and "Kaplan-Yorke dimension" in out


# ---------------------------------------------------------------------------------------------------------------
# diffusers config (through the lead's pifskit.scheduler_config)
# ---------------------------------------------------------------------------------------------------------------

def test_geometry_from_diffusers_config_matches_diffusers(tmp_path, capsys):
    diffusers = pytest.importorskip("diffusers")
    cfg = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
           "beta_end": 0.012, "beta_schedule": "scaled_linear", "set_alpha_to_one": False,
           "steps_offset": 1, "timestep_spacing": "leading", "clip_sample": False}
    path = tmp_path / "scheduler_config.json"
    path.write_text(json.dumps(cfg))
    out = cli_json(["geometry", "--diffusers-config", str(path), "--steps", "20"], capsys)
    sched = diffusers.DDIMScheduler.from_config(cfg)
    sched.set_timesteps(20)
    ts = sched.timesteps.numpy()
    assert out["timesteps"] == ts.tolist()
    ab = as_floats(out["alpha_bar"])
    ac = sched.alphas_cumprod.numpy().astype(np.float64)
    np.testing.assert_allclose(ab[:-1], ac[ts], rtol=1e-6)
    assert out["lands_clean"] is False  # set_alpha_to_one = False: the last step lands on alpha_bar[0]
    assert ab[-1] == pytest.approx(float(ac[0]), rel=1e-6)
    ref = direct_steps(ab)
    assert_close(as_floats(out["L_star"]), ref["L_star"])


# ---------------------------------------------------------------------------------------------------------------
# bad input: exit code 2, one stderr line, no traceback
# ---------------------------------------------------------------------------------------------------------------

BAD = [
    ["geometry", "--schedule", "nope"],
    ["geometry", "--steps", "0"],
    ["geometry", "--steps", "-3"],
    ["geometry", "--steps", "5000"],
    ["geometry", "--steps", "ten"],
    ["geometry", "--spacing", "sideways"],
    ["geometry", "--lambda-points", "-1"],
    ["geometry", "--lambda-points", "5", "--lambda-min", "10", "--lambda-max", "1"],
    ["geometry", "--sigmas", "1,2,3"],
    ["geometry", "--timesteps", "999,abc"],
    ["geometry", "--diffusers-config", "/nonexistent/scheduler_config.json"],
    ["lyapunov", "--spectrum", "bogus:3"],
    ["lyapunov", "--spectrum", "powerlaw:x"],
    ["lyapunov", "--spectrum", "file:/nonexistent/eigs.npy"],
    ["lyapunov", "--resolution", "0"],
    ["lyapunov", "--pixel-variance", "-1"],
    ["lyapunov", "--steps", "5000"],
    ["report", "--schedule", "nope"],
    ["report", "--patch", "7"],
    ["report", "--steps", "0"],
    ["report", "--spectrum", "file:/nonexistent/eigs.npy"],
]


@pytest.mark.parametrize("argv", BAD, ids=lambda a: " ".join(a))
def test_bad_input_one_line_exit_2(argv, capsys, tmp_path):
    if argv[0] == "report":
        argv = [*argv, "--out", str(tmp_path / "r")]
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pifskit")


def test_bad_spectrum_file_contents(tmp_path, capsys):
    for name, content in (("neg.txt", "1.0\n-2.0\n"), ("nan.txt", "1.0\nnan\n"), ("zero.txt", "0\n0\n"),
                          ("junk.txt", "hello world\n")):
        p = tmp_path / name
        p.write_text(content)
        code, out, err = run_cli(["lyapunov", "--spectrum", f"file:{p}"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)


def test_malformed_diffusers_config(tmp_path, capsys):
    for text in ("{not json", json.dumps({"beta_schedule": "wavy"}), json.dumps([1, 2])):
        p = tmp_path / "scheduler_config.json"
        p.write_text(text)
        code, out, err = run_cli(["geometry", "--diffusers-config", str(p)], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (text, err)


def test_bad_input_via_python_m(tmp_path):
    """The real entry point (`python -m pifskit`), in a subprocess."""
    for argv in (["geometry", "--steps", "5000"], ["lyapunov", "--spectrum", "bogus"]):
        proc = subprocess.run([sys.executable, "-m", "pifskit", *argv], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert proc.returncode == 2
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
