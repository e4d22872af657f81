"""Every field of a diffusers scheduler config is honoured as diffusers honours it, or refused by name.

The reference is diffusers itself: the chain pifskit builds from a config must be what that config's own
``set_timesteps(N)`` runs (sigmas and timesteps to float32 precision).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pifskit._validate import PifsError
from pifskit.scheduler_config import chain_from_config, load_scheduler_config

diffusers = pytest.importorskip("diffusers")

SVD = {"_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
       "beta_end": 0.012, "interpolation_type": "linear", "num_train_timesteps": 1000,
       "prediction_type": "v_prediction", "sigma_max": 700.0, "sigma_min": 0.002, "steps_offset": 0,
       "timestep_spacing": "leading", "timestep_type": "continuous", "use_karras_sigmas": True}
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}

EULER_CONFIGS = {
    "svd-karras-700": SVD,
    "karras-table-range": {"_class_name": "EulerDiscreteScheduler", **SD, "use_karras_sigmas": True},
    "karras-sigma-range": {"_class_name": "EulerDiscreteScheduler", **SD, "use_karras_sigmas": True,
                           "sigma_min": 0.05, "sigma_max": 30.0},
    "exponential": {"_class_name": "EulerDiscreteScheduler", **SD, "use_exponential_sigmas": True,
                    "sigma_max": 80.0, "sigma_min": 0.01},
    "beta": {"_class_name": "EulerDiscreteScheduler", **SD, "use_beta_sigmas": True},
    "final-sigma-min": {"_class_name": "EulerDiscreteScheduler", **SD, "final_sigmas_type": "sigma_min",
                        "timestep_spacing": "trailing"},
    "zero-snr-trailing": {"_class_name": "EulerDiscreteScheduler", **SD, "rescale_betas_zero_snr": True,
                          "timestep_spacing": "trailing"},
    "ancestral-linspace": {"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "linspace"},
}


def _reference(cfg: dict, n: int):
    cls = getattr(diffusers, cfg["_class_name"])
    sch = cls.from_config({k: v for k, v in cfg.items() if k != "_class_name"})
    sch.set_timesteps(n)
    return sch.sigmas.double().numpy(), sch.timesteps.double().numpy()


@pytest.mark.parametrize("name", sorted(EULER_CONFIGS))
@pytest.mark.parametrize("n", [2, 7, 25])
def test_euler_family_chain_is_what_set_timesteps_runs(name, n):
    cfg = EULER_CONFIGS[name]
    sched, full = load_scheduler_config(cfg)
    chain = chain_from_config(sched, full, n)
    ref_sig, ref_ts = _reference(cfg, n)
    np.testing.assert_allclose(chain.sigmas, ref_sig, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(chain.timesteps, ref_ts, rtol=2e-5, atol=2e-4)


def test_svd_config_chain_starts_at_its_sigma_max():
    sched, full = load_scheduler_config(SVD)
    chain = chain_from_config(sched, full, 10)
    assert chain.sigmas[0] == pytest.approx(700.0) and chain.sigmas[-2] == pytest.approx(0.002)


def test_svd_config_cli(tmp_path):
    p = tmp_path / "scheduler_config.json"
    p.write_text(json.dumps(SVD))
    out = subprocess.run([sys.executable, "-m", "pifskit", "design", "steps", "--diffusers-config", str(p),
                          "--steps", "10", "--json"], capture_output=True, text=True, check=True)
    d = json.loads(out.stdout)
    assert d["sigma_max"] == pytest.approx(700.0) and d["sigma_min"] == pytest.approx(0.002)
    ref_sig, _ = _reference(SVD, 10)
    np.testing.assert_allclose(d["baselines"]["config"]["sigmas"], ref_sig, rtol=2e-6)
    assert max(d["sigmas"]) <= 700.0 * (1 + 1e-9)
    assert d["w2"] <= d["baselines"]["config"]["w2"]


@pytest.mark.parametrize("bad, msg", [
    ({**SD, "beta_start": 0.012, "beta_end": 0.00085}, "beta_start < beta_end"),
    ({**SD, "beta_end": "0.012"}, "'beta_end' must be a number"),
    ({**SD, "beta_start": True}, "'beta_start' must be a number"),
    ({**SD, "rescale_betas_zero_snr": "yes"}, "must be true or false"),
    ({"_class_name": "DPMSolverMultistepScheduler", "use_lu_lambdas": True}, "'use_lu_lambdas'"),
    ({"_class_name": "EulerDiscreteScheduler", "interpolation_type": "log_linear"}, "log_linear"),
    ({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True, "use_beta_sigmas": True}, "only one of"),
    ({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True, "sigma_min": 5.0, "sigma_max": 1.0},
     "sigma_min < sigma_max"),
    ({"_class_name": "EulerDiscreteScheduler", "final_sigmas_type": "one"}, "unknown final_sigmas_type"),
    ({"_class_name": "EulerDiscreteScheduler", "my_new_field": 3}, "'my_new_field' = 3 is not reproduced"),
    ({"prediction_type": "noise"}, "unknown prediction type"),
])
def test_fields_refused_by_name(bad, msg):
    with pytest.raises(PifsError, match=msg):
        load_scheduler_config(bad)


def test_fields_of_other_classes_are_ignored_as_diffusers_ignores_them():
    """A DDPM config converted from an Euler one keeps `use_karras_sigmas`; diffusers' DDPM ignores it."""
    cfg = {"_class_name": "DDPMScheduler", **SD, "use_karras_sigmas": True, "sigma_max": 700.0}
    sched, full = load_scheduler_config(cfg)
    ref = diffusers.DDPMScheduler.from_config({k: v for k, v in cfg.items() if k != "_class_name"})
    ref.set_timesteps(10)
    np.testing.assert_array_equal(chain_from_config(sched, full, 10).timesteps, ref.timesteps.numpy())


def test_every_default_field_of_the_supported_classes_is_accepted():
    from pifskit import scheduler_config as dc

    for name in dc.DDIM_FAMILY + dc.EULER_FAMILY + dc.FLOW_FAMILY + dc.MULTISTEP_FAMILY:
        cls = getattr(diffusers, name, None)
        if cls is None:
            continue
        load_scheduler_config({**dict(cls().config), "_class_name": name})


def test_config_files_and_folders(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(PifsError, match="is empty"):
        load_scheduler_config(empty)
    with pytest.raises(PifsError, match="folder without scheduler_config.json"):
        load_scheduler_config(tmp_path)
    (tmp_path / "pipe" / "scheduler").mkdir(parents=True)
    (tmp_path / "pipe" / "scheduler" / "scheduler_config.json").write_text(json.dumps(SVD))
    sched, full = load_scheduler_config(tmp_path / "pipe")  # a saved pipeline folder, as from_pretrained reads it
    assert full["sigma_max"] == 700.0


def _cli(*args: str, cwd=None):
    return subprocess.run([sys.executable, "-m", "pifskit", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("content", ["", '{"beta_end": "0.012"}', '{"_class_name": "EulerDiscreteScheduler", '
                                     '"use_exponential_sigmas": true, "use_karras_sigmas": true}', "{not json"])
def test_cli_bad_configs_one_line_exit_2(tmp_path, content):
    p = tmp_path / "c.json"
    p.write_text(content)
    out_dir = tmp_path / "out"
    r = _cli("geometry", "--diffusers-config", str(p), "--steps", "5", "--json")
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    r = _cli("report", "--diffusers-config", str(p), "--steps", "5", "--out", str(out_dir))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert not out_dir.exists()


def test_cli_folder_config_message(tmp_path):
    r = _cli("geometry", "--diffusers-config", str(tmp_path), "--steps", "5")
    assert r.returncode == 2 and "folder without scheduler_config.json" in r.stderr


def test_pndm_is_said_to_be_analysed_as_ddim(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"_class_name": "PNDMScheduler", **SD, "skip_prk_steps": True}))
    r = _cli("geometry", "--diffusers-config", str(p), "--steps", "5", "--json")
    assert r.returncode == 0, r.stderr
    assert "PNDMScheduler is analysed as DDIM" in r.stderr
    json.loads(r.stdout)


def test_class_defaults_are_diffusers_defaults():
    """An empty config of each class means that class's own defaults (Euler/DPM/UniPC: linspace; Heun: SD betas)."""
    from pifskit import scheduler_config as dc

    for name in dc.DDIM_FAMILY + dc.EULER_FAMILY + dc.MULTISTEP_FAMILY:
        cls = getattr(diffusers, name, None)
        if cls is None:
            continue
        ref = dict(cls().config)
        _, full = load_scheduler_config({"_class_name": name})
        for key in ("timestep_spacing", "beta_start", "beta_end", "beta_schedule", "steps_offset"):
            assert full[key] == ref[key], (name, key)
        if name == "PNDMScheduler":
            continue  # PNDM's own list repeats timesteps (its multistep warm-up); analysed as DDIM
        sched, full = load_scheduler_config({"_class_name": name})
        r = cls()
        r.set_timesteps(10)
        np.testing.assert_allclose(chain_from_config(sched, full, 10).timesteps[:3], r.timesteps.numpy()[:3] if
                                   name != "HeunDiscreteScheduler" else r.timesteps.numpy()[[0, 1, 3]], atol=1e-3)
