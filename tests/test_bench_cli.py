"""``pifskit bench sampling``: JSON output, report files, determinism, exit code 2 on bad input."""

import json

import numpy as np
import pytest

from pifskit.cli import main


def _run(capsys, argv):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_gaussian_closed_form_json(capsys):
    rc, out, err = _run(capsys, ["bench", "sampling", "--data", "gaussian:powerlaw:2", "--resolution", "8",
                                 "--channels", "1", "--samplers", "ddim,heun", "--steps", "5,20",
                                 "--schedules", "trailing,karras", "--json"])
    assert rc == 0, err
    rep = json.loads(out)
    rows = rep["results"]
    assert len(rows) == 2 * 2 * 2 * 2  # samplers x steps x schedules x metrics
    assert set(rows[0]) >= {"sampler", "schedule", "steps", "metric", "value", "ci_low", "ci_high"}
    w2 = {(r["sampler"], r["schedule"], r["steps"]): r["value"] for r in rows if r["metric"] == "w2"}
    for smp in ("ddim", "heun"):
        for sc in ("trailing", "karras"):
            assert w2[(smp, sc, 20)] < w2[(smp, sc, 5)]
    # closed form: the CI is the value itself
    assert all(r["ci_low"] == r["value"] == r["ci_high"] for r in rows)
    assert rep["noise_range"]["sigma_max"] == pytest.approx(14.6146, abs=1e-3)
    assert {r["nfe"] for r in rows if r["sampler"] == "heun" and r["steps"] == 5} == {9}


def test_gmm_digits_report_files_and_determinism(tmp_path, capsys):
    argv = ["bench", "sampling", "--data", "gmm:digits", "--samplers", "ddim,dpmpp2m", "--steps", "5",
            "--schedules", "trailing,logsnr", "--samples", "300", "--n-boot", "5", "--mmd-samples", "200",
            "--seed", "3", "--json"]
    rc, out, err = _run(capsys, argv + ["--out", str(tmp_path / "a")])
    assert rc == 0, err
    rep = json.loads(out)
    for name in ("report.json", "results.md", "error_vs_nfe_sw2.png", "error_vs_nfe_mmd2.png",
                 "error_vs_nfe_mode_tv.png"):
        assert (tmp_path / "a" / name).is_file()
    assert {r["metric"] for r in rep["results"]} == {"sw2", "mmd2", "mode_tv"}
    assert {(p["schedule"], p["reference"]) for p in rep["paired"]} == {("logsnr", "trailing")}
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in rep["results"])
    assert rep["timing"]["samples_per_second"] > 0
    assert "| ddim | trailing |" in (tmp_path / "a" / "results.md").read_text()
    rc, out2, _ = _run(capsys, argv)
    assert rc == 0
    v1 = [r["value"] for r in rep["results"]]
    v2 = [r["value"] for r in json.loads(out2)["results"]]
    np.testing.assert_array_equal(v1, v2)


def test_table_output_and_samples_per_second(capsys):
    rc, out, err = _run(capsys, ["bench", "sampling", "--data", "gmm:digits", "--samplers", "euler", "--steps", "3",
                                 "--schedules", "karras", "--samples", "200", "--n-boot", "3", "--mmd-samples", "100"])
    assert rc == 0
    assert "## sw2" in out and "| euler | karras |" in out
    assert "samples/s" in err


def test_pifskit_schedule_runs_when_design_available(capsys):
    rc, out, err = _run(capsys, ["bench", "sampling", "--data", "gaussian:powerlaw:2", "--resolution", "8",
                                 "--channels", "1", "--samplers", "ddim", "--steps", "10",
                                 "--schedules", "trailing,pifskit", "--json"])
    assert rc == 0, err
    rep = json.loads(out)
    w2 = {r["schedule"]: r["value"] for r in rep["results"] if r["metric"] == "w2"}
    assert set(w2) == {"trailing", "pifskit"}


@pytest.mark.parametrize("args,msg", [
    (["--samplers", "lms"], "unknown sampler"),
    (["--schedules", "cosine-ish"], "unknown schedule"),
    (["--data", "gmm:cifar"], "mixture data"),
    (["--data", "wishart:digits"], "unknown data model"),
    (["--data", "gmm:mnist"], "needs the directory"),
    (["--data", "gmm:mnist:/nonexistent/dir"], "not found"),
    (["--steps", "5,x"], "integers"),
    (["--steps", "0"], ">= 1"),
    (["--samples", "1"], "samples"),
    (["--data", "gaussian:powerlaw:abc"], "exponent"),
    (["--data", "gmm:digits", "--dim", "100"], "PCA dimension"),
    (["--data", "gmm:digits", "--jitter", "0"], "singular"),
    (["--data", "gmm:digits", "--jitter", "-1"], "jitter"),
])
def test_bad_input_exit_2(capsys, args, msg):
    base = ["bench", "sampling", "--data", "gaussian:powerlaw:2", "--resolution", "4", "--channels", "1",
            "--steps", "3", "--schedules", "trailing", "--samplers", "ddim", "--samples", "50", "--json"]
    argv = base.copy()
    for i in range(0, len(args), 2):
        if args[i] in argv:
            j = argv.index(args[i])
            argv[j + 1] = args[i + 1]
        else:
            argv += args[i:i + 2]
    rc, out, err = _run(capsys, argv)
    assert rc == 2
    assert msg in err and err.count("\n") == 1


def _bar_modules() -> list[str]:
    from pathlib import Path

    import pifskit

    root = Path(pifskit.__file__).parent
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")
                  if any(w in p.read_text(encoding="utf-8") for w in ("rich.progress", "tqdm")))


def test_one_progress_bar_library_takes_callbacks():
    """Only the CLI draws a progress bar (cli/_common.progress); library code takes a callback."""
    from pifskit.exact_bench import parse_bench_data, run_sampling_benchmark

    assert [m for m in _bar_modules() if m != "torch/train.py"] == ["cli/_common.py"]
    calls = []
    data = parse_bench_data("gaussian:powerlaw:2", resolution=4, channels=1)
    run_sampling_benchmark(data, ["ddim", "euler"], [3, 5], ["trailing"], progress=lambda n=1: calls.append(n))
    assert sum(calls) == 4  # one per configuration


def test_train_draws_no_bar_of_its_own():
    assert "torch/train.py" not in _bar_modules()


def test_cli_progress_lines_when_not_a_tty(capsys):
    """Redirected output: plain lines with count, fields, elapsed time and ETA (first and last update)."""
    from pifskit.cli._common import progress

    with progress("work", 4, lines_every_s=3600.0) as adv:
        adv(completed=2, loss=0.5)
        adv(completed=3, loss=0.4)  # within the interval: no line
        adv(completed=4, loss=0.25)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("work 2/4 (50%)  loss 0.5  elapsed 0:00:00")
    assert err[1].startswith("work 4/4 (100%)  loss 0.25") and "eta 0:00:00" in err[1]
    with progress("quiet", 2) as adv:
        adv()
        adv()
    assert capsys.readouterr().err == ""
