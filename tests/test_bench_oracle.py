"""``pifskit bench sampling --oracle`` and ``--levels NAME=FILE``: the search, its separate sample, the files."""

import json

import numpy as np
import pytest

import pifskit.exact_bench as bs
from pifskit.chains import Chain, make_chain, sigma_range
from pifskit.cli import main
from pifskit.metrics import gaussian_output_moments, gaussian_w2
from pifskit.samplers import parse_sampler
from pifskit.schedules import get_schedule


@pytest.fixture(scope="module")
def digits():
    return bs.parse_bench_data("gmm:digits")


def _run(capsys, argv):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_oracle_improves_on_its_start_on_the_optimisation_sample(digits):
    sched = get_schedule("sd")
    _, fn, opts = parse_sampler("ddim")
    f = bs.oracle_objective(digits.model, fn, opts, n=200, seed=4)
    starts = {"logsnr": make_chain(sched, 3, "logsnr"), "karras": make_chain(sched, 3, "karras")}
    res = bs.optimise_oracle(f, starts, sigma_range(sched), budget=25)
    # the start is the better of the two schedules, scored independently on a fresh objective (same seeds)
    g = bs.oracle_objective(digits.model, fn, opts, n=200, seed=4)
    start_vals = {k: g(c) for k, c in starts.items()}
    assert res.start_schedule == min(start_vals, key=start_vals.get)
    assert res.start_value == pytest.approx(min(start_vals.values()), rel=1e-12)
    # a uniform-logSNR 3-step DDIM chain is far from optimal: the search must strictly improve on it
    assert res.value < res.start_value - 1e-3
    assert g(res.chain) == pytest.approx(res.value, rel=1e-12)  # deterministic objective: CRN
    assert res.evaluations <= 25
    h = np.asarray(res.history)
    assert h[0] == res.start_value and h[-1] == res.value and (np.diff(h) < 0).all()
    lo, hi = res.bounds
    sig = res.chain.sigmas[:-1]
    assert res.chain.sigmas[-1] == 0.0 and (np.diff(sig) < 0).all() and lo <= sig.min() and sig.max() <= hi


def test_oracle_start_already_optimal_returns_it(digits):
    """Budget 1 (only the start evaluated): the oracle is its start, exactly."""
    sched = get_schedule("sd")
    _, fn, opts = parse_sampler("heun")
    f = bs.oracle_objective(digits.model, fn, opts, n=100, seed=0)
    start = make_chain(sched, 2, "trailing")
    res = bs.optimise_oracle(f, {"trailing": start}, sigma_range(sched), budget=1)
    np.testing.assert_allclose(res.chain.sigmas, start.sigmas, rtol=1e-12)
    assert res.value == res.start_value and res.evaluations == 1


def test_oracle_uses_a_separate_sample_from_the_evaluation(digits, monkeypatch):
    seen = []
    real = bs._batched

    def spy(sampler, denoiser, chain, x_T, *a, **k):
        seen.append(x_T)
        return real(sampler, denoiser, chain, x_T, *a, **k)

    monkeypatch.setattr(bs, "_batched", spy)
    rep = bs.run_sampling_benchmark(digits, ["ddim"], [2], ["trailing", "karras"], n_samples=120, seed=5, n_boot=4,
                                    mmd_samples=60, oracle=True, oracle_budget=6, oracle_samples=120)
    x_eval = np.random.default_rng([5, 0]).standard_normal((120, digits.model.d))
    x_opt = np.random.default_rng([5, 7, 0]).standard_normal((120, digits.model.d))
    is_eval = [np.array_equal(x, x_eval) for x in seen]
    is_opt = [np.array_equal(x, x_opt) for x in seen]
    assert all(a != b for a, b in zip(is_eval, is_opt))  # every call used exactly one of the two samples
    assert sum(is_opt) == rep["oracle"][0]["evaluations"] == 6
    assert sum(is_eval) == 3  # trailing, karras, then the oracle's levels on the evaluation sample
    assert not np.allclose(x_eval, x_opt)
    o = rep["settings"]["oracle"]
    assert o["optimisation_seed"] != o["evaluation_seed"]
    # the oracle row on the evaluation sample and its gap rows: gap = SW2(schedule) - SW2(oracle)
    sw = {r["schedule"]: r["value"] for r in rep["results"] if r["metric"] == "sw2"}
    gaps = {r["schedule"]: r for r in rep["oracle_gap"]}
    assert set(gaps) == {"trailing", "karras", "oracle"}
    for sc in ("trailing", "karras"):
        assert gaps[sc]["value"] == pytest.approx(sw[sc] - sw["oracle"], abs=1e-12)
        assert gaps[sc]["ci_low"] <= gaps[sc]["value"] <= gaps[sc]["ci_high"]
    assert gaps["oracle"]["value"] == 0.0
    best = rep["versus_best"][0]
    assert best["schedule"] == "trailing" and best["best_other"] == "karras"
    assert best["value"] == pytest.approx(sw["trailing"] - sw["karras"], abs=1e-12)


def test_oracle_cli_report_files(tmp_path, capsys):
    argv = ["bench", "sampling", "--data", "gmm:digits", "--samplers", "dpmpp2m", "--steps", "2",
            "--schedules", "trailing", "--samples", "100", "--n-boot", "3", "--mmd-samples", "50", "--oracle",
            "--oracle-budget", "5", "--oracle-samples", "80", "--no-plots", "--json", "--out", str(tmp_path)]
    rc, out, err = _run(capsys, argv)
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["settings"]["oracle"]["budget"] == 5 and rep["settings"]["oracle"]["samples"] == 80
    o = rep["oracle"][0]
    assert o["value"] <= o["start_value"] and o["start_schedule"] == "trailing" and o["evaluations"] <= 5
    assert any(c["schedule"] == "oracle" and c["sampler"] == "dpmpp2m" for c in rep["chains"])
    md = (tmp_path / "results.md").read_text()
    assert "Distance to the oracle" in md and "| dpmpp2m | oracle |" in md
    assert "Distance to the oracle" in (tmp_path / "report.html").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["oracle_gap"]


def _design_json(capsys, steps, solver):
    rc, out, err = _run(capsys, ["design", "steps", "--schedule", "sd", "--steps", str(steps), "--solver", solver,
                                 "--json"])
    assert rc == 0, err
    return json.loads(out)


def test_levels_round_trip_with_a_design_json(tmp_path, capsys):
    d5 = _design_json(capsys, 5, "heun")
    (tmp_path / "d5.json").write_text(json.dumps(d5))
    d3 = _design_json(capsys, 3, "heun")
    (tmp_path / "keyed.json").write_text(json.dumps({"3": d3, "5": {"sigmas": d5["sigmas"][:-1]}}))
    rc, out, err = _run(capsys, ["bench", "sampling", "--data", "gaussian:powerlaw:2", "--resolution", "4",
                                 "--channels", "1", "--samplers", "heun", "--steps", "3,5", "--schedules", "trailing",
                                 "--levels", f"mine={tmp_path / 'd5.json'}", "--levels",
                                 f"keyed={tmp_path / 'keyed.json'}", "--json"])
    assert rc == 0, err
    rep = json.loads(out)
    chains = {(c["schedule"], c["steps"]): c["sigmas"] for c in rep["chains"]}
    np.testing.assert_allclose(chains[("mine[heun]", 5)], d5["sigmas"], rtol=1e-12)
    np.testing.assert_allclose(chains[("keyed[heun]", 3)], d3["sigmas"], rtol=1e-12)
    np.testing.assert_allclose(chains[("keyed[heun]", 5)], d5["sigmas"], rtol=1e-12)  # final 0 added
    assert ("mine[heun]", 3) not in chains
    # the scored W2 is the closed form of those levels, computed here independently
    data = bs.parse_bench_data("gaussian:powerlaw:2", resolution=4, channels=1)
    _, fn, opts = parse_sampler("heun")
    want = gaussian_w2(gaussian_output_moments(data.model, fn, Chain.from_sigmas(d5["sigmas"]), start="prior"))
    w2 = {(r["schedule"], r["steps"]): r["value"] for r in rep["results"] if r["metric"] == "w2"}
    assert w2[("mine[heun]", 5)] == pytest.approx(want, rel=1e-10)
    assert w2[("keyed[heun]", 5)] == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("content,extra,msg", [
    (None, [], "not found"),
    ("{not json", [], "cannot read"),
    ('{"levels": [1, 0]}', [], "expected an object with 'sigmas'"),
    ('{"sigmas": [1.0, 2.0, 0]}', [], "strictly decreasing"),
    ('{"sigmas": [3.0, "a", 0]}', [], "list of numbers"),
    ('{"sigmas": [9.0, 3.0, 1.0, 0.3, 0]}', [], "none among --steps"),
    ('{"5": {"sigmas": [9.0, 3.0, 0]}}', [], "holds 2 noisy levels"),
    ('{"sigmas": [9.0, 1.0, 0.2, 0]}', ["--levels", "BAD"], "NAME=FILE"),
    ('{"sigmas": [9.0, 1.0, 0.2, 0]}', ["--oracle"], "mixture data model"),
])
def test_bad_levels_file_exit_2(tmp_path, capsys, content, extra, msg):
    f = tmp_path / "lv.json"
    if content is not None:
        f.write_text(content)
    rc, out, err = _run(capsys, ["bench", "sampling", "--data", "gaussian:powerlaw:2", "--resolution", "4",
                                 "--channels", "1", "--samplers", "ddim", "--steps", "3", "--schedules", "trailing",
                                 "--levels", f"x={f}", *extra, "--json"])
    assert rc == 2
    assert msg in err and err.count("\n") == 1


def test_levels_name_must_not_shadow_a_schedule(tmp_path, capsys):
    f = tmp_path / "lv.json"
    f.write_text('{"sigmas": [9.0, 1.0, 0.2, 0]}')
    for name in ("karras", "oracle", "a,b"):
        rc, _, err = _run(capsys, ["bench", "sampling", "--data", "gaussian:powerlaw:2", "--resolution", "4",
                                   "--channels", "1", "--samplers", "ddim", "--steps", "3", "--schedules", "trailing",
                                   "--levels", f"{name}={f}", "--json"])
        assert rc == 2 and "not a built-in schedule" in err and err.count("\n") == 1


def test_levels_schedule_as_the_paired_reference(tmp_path, capsys):
    f = tmp_path / "lv.json"
    f.write_text('{"sigmas": [14.6, 2.0, 0.3, 0], "solver": "ddim"}')
    base = ["bench", "sampling", "--data", "gmm:digits", "--samplers", "ddim", "--steps", "3",
            "--schedules", "trailing,karras", "--samples", "100", "--n-boot", "3", "--mmd-samples", "50",
            "--levels", f"mine={f}", "--json"]
    rc, out, err = _run(capsys, base + ["--reference", "mine"])
    assert rc == 0, err
    rep = json.loads(out)
    sw = {r["schedule"]: r["value"] for r in rep["results"] if r["metric"] == "sw2"}
    pr = {r["schedule"]: r for r in rep["paired"]}
    assert set(pr) == {"trailing", "karras"} and {r["reference"] for r in rep["paired"]} == {"mine[ddim]"}
    for sc in ("trailing", "karras"):
        assert pr[sc]["value"] == pytest.approx(sw[sc] - sw["mine[ddim]"], abs=1e-12)
    vb = rep["versus_best"][0]
    assert vb["schedule"] == "mine[ddim]" and vb["best_other"] == min(("trailing", "karras"), key=sw.get)
    rc, _, err = _run(capsys, base + ["--reference", "linspace"])
    assert rc == 2 and "reference schedule" in err and err.count("\n") == 1
