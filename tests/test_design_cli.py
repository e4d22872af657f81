"""`pifskit design ...`: JSON keys, numbers matching the library, bad input -> exit 2."""

import json

import numpy as np
import pytest

from pifskit.cli import main
from pifskit.design.offset import cosine_offset_for_bits
from pifskit.design.steps import optimal_steps, rms_log_sigma
from pifskit.schedules import get_schedule
from pifskit.spectra import powerlaw

SD15_CONFIG = {
    "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False,
}


def run_json(capsys, *argv):
    assert main(list(argv) + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_offset_json(capsys):
    d = run_json(capsys, "design", "offset", "--timesteps", "1000", "--bits", "8")
    assert {"offset", "first_sigma"} <= set(d)
    assert d["offset"] == pytest.approx(cosine_offset_for_bits(8, 1000).offset)


def test_shift_json_powerlaw_and_measured(capsys, tmp_path):
    d = run_json(capsys, "design", "shift", "--resolution", "256", "--base-resolution", "64")
    assert {"logsnr_shift", "timestep_shift"} <= set(d)
    assert d["timestep_shift"] == pytest.approx(np.exp(-d["logsnr_shift"] / 2))
    np.save(tmp_path / "hi.npy", np.array([64.0, 8.0, 1.0]))
    np.save(tmp_path / "lo.npy", np.array([16.0, 4.0]))
    d = run_json(capsys, "design", "shift", "--resolution", "128", "--base-resolution", "64",
                 "--spectrum", f"file:{tmp_path / 'hi.npy'}", "--base-spectrum", f"file:{tmp_path / 'lo.npy'}")
    assert d["logsnr_shift"] == pytest.approx(-np.log(4.0))
    assert d["timestep_shift"] == pytest.approx(2.0)


def test_weighting_json(capsys):
    d = run_json(capsys, "design", "weighting", "--spectrum", "powerlaw:0", "--pixel-variance", "0.2043",
                 "--prediction", "v")
    assert {"gamma", "weights"} <= set(d)
    assert len(d["weights"]) == 1000
    assert d["gamma"] == pytest.approx(1 / 0.2043)


def test_steps_json_sd15_config_acceptance(capsys, tmp_path):
    cfg = tmp_path / "scheduler_config.json"
    cfg.write_text(json.dumps(SD15_CONFIG))
    d = run_json(capsys, "design", "steps", "--steps", "10", "--diffusers-config", str(cfg))
    assert {"sigmas", "timesteps", "w2", "baselines"} <= set(d)
    assert d["sigmas"][-1] == 0.0 and len(d["sigmas"]) == 11 and len(d["timesteps"]) == 10
    assert all(isinstance(t, int) for t in d["timesteps"])
    assert np.all(np.diff(d["timesteps"]) < 0)
    for name, b in d["baselines"].items():
        assert {"sigmas", "w2"} <= set(b)
        assert d["w2"] < b["w2"], name
    ays, kar = d["baselines"]["ays-sd15"]["sigmas"], d["baselines"]["karras-rho7"]["sigmas"]
    assert d["rms_log_sigma_to_ays-sd15"] == pytest.approx(rms_log_sigma(d["sigmas"], ays))
    assert d["rms_log_sigma_to_ays-sd15"] < rms_log_sigma(kar, ays)
    # the same numbers as the library with the documented defaults (64x64x4 latent, |k|^-1.5, unit variance)
    lib = optimal_steps(get_schedule("sd"), powerlaw(64, 4, 1.5, 1.0), 10)
    np.testing.assert_allclose(d["sigmas"], lib.sigmas, rtol=1e-6)


def test_practice_json_and_html(capsys):
    d = run_json(capsys, "design", "practice")
    assert len(d["design"]) == 5
    assert main(["design", "practice", "--html"]) == 0
    assert capsys.readouterr().out.strip().startswith("<table")


@pytest.mark.parametrize("argv,msg", [
    (["design", "offset", "--bits", "17"], "1..16"),
    (["design", "offset", "--bits", "0"], "1..16"),
    (["design", "shift", "--resolution", "0"], "positive"),
    (["design", "shift", "--resolution", "64", "--base-resolution", "-1"], "positive"),
    (["design", "steps", "--steps", "1001"], "<= 1000"),
    (["design", "steps", "--steps", "0"], ">= 1"),
    (["design", "shift", "--resolution", "64", "--spectrum", "powerlaw:2"], "--base-spectrum"),
])
def test_bad_input_exit_2(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_zero_spectrum_file_exit_2(capsys, tmp_path):
    np.save(tmp_path / "z.npy", np.zeros(5))
    assert main(["design", "steps", "--spectrum", f"file:{tmp_path / 'z.npy'}"]) == 2
    assert "no positive eigenvalue" in capsys.readouterr().err
