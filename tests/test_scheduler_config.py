"""Schedules and chains imported from diffusers configs match diffusers itself."""

import json

import numpy as np
import pytest

from pifskit import PifsError
from pifskit.chains import Chain
from pifskit.scheduler_config import chain_from_config, load_scheduler_config

diffusers = pytest.importorskip("diffusers")
torch = pytest.importorskip("torch")

SD15 = {"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
        "clip_sample": False, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
        "steps_offset": 1, "trained_betas": None}

BETA_CONFIGS = [
    {"beta_schedule": "linear"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": True},
    {"beta_schedule": "linear", "num_train_timesteps": 37, "beta_start": 0.001, "beta_end": 0.2},
    {"trained_betas": list(np.linspace(1e-3, 0.05, 50)), "num_train_timesteps": 50},
]


@pytest.mark.parametrize("extra", BETA_CONFIGS)
def test_alphas_cumprod_float_precision(extra):
    cfg = {"_class_name": "DDIMScheduler", **extra}
    sched, full = load_scheduler_config(cfg)
    ref = diffusers.DDIMScheduler(**{k: v for k, v in extra.items()}).alphas_cumprod.double().numpy()
    # float32 precision: one ulp of the O(1) quantities diffusers computes. Zero-terminal-SNR rescaling
    # works on sqrt(alpha_bar) and cancels near the end, so compare on that scale there.
    if extra.get("rescale_betas_zero_snr"):
        np.testing.assert_allclose(np.sqrt(sched.alphas_cumprod), np.sqrt(ref), rtol=0, atol=3e-7)
        assert sched.alphas_cumprod[-1] == ref[-1] == 0.0
    else:
        np.testing.assert_allclose(sched.alphas_cumprod, ref, rtol=2e-6, atol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 3, 7, 10, 50, 121, 999, 1000])
@pytest.mark.parametrize("offset", [0, 1])
def test_ddim_timesteps_and_levels(spacing, steps, offset):
    kw = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing=spacing,
              steps_offset=offset, set_alpha_to_one=True)
    ref = diffusers.DDIMScheduler(**kw)
    if spacing == "leading" and offset and (np.arange(steps) * (1000 // steps)).max() + offset > 999:
        pytest.skip("offset pushes past T - 1 (diffusers would index out of range)")
    ref.set_timesteps(steps)
    sched, cfg = load_scheduler_config({"_class_name": "DDIMScheduler", **kw})
    chain = chain_from_config(sched, cfg, steps)
    np.testing.assert_array_equal(chain.timesteps, ref.timesteps.numpy()[:steps])
    np.testing.assert_allclose(chain.alpha_bar[:-1], ref.alphas_cumprod[ref.timesteps[:steps]].double().numpy(), rtol=2e-6)
    assert chain.lands_clean and chain.alpha_bar[-1] == ref.final_alpha_cumprod.item() == 1.0


def test_sd15_config_does_not_land_clean(tmp_path):
    p = tmp_path / "scheduler_config.json"
    p.write_text(json.dumps(SD15))
    sched, cfg = load_scheduler_config(p)
    chain = chain_from_config(sched, cfg, 10)
    ref = diffusers.PNDMScheduler.from_config(SD15)
    ref.set_timesteps(10)
    # PNDM with skip_prk_steps repeats one timestep for PLMS warm-up; its unique levels are DDIM's leading+offset
    np.testing.assert_array_equal(chain.timesteps, np.unique(ref.timesteps.numpy())[::-1])
    assert not chain.lands_clean
    assert chain.alpha_bar[-1] == pytest.approx(float(ref.alphas_cumprod[0]), rel=1e-7)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 4, 10, 30])
def test_euler_sigmas(spacing, steps):
    kw = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing=spacing,
              steps_offset=1 if spacing == "leading" else 0)
    ref = diffusers.EulerDiscreteScheduler(**kw)
    ref.set_timesteps(steps)
    sched, cfg = load_scheduler_config({"_class_name": "EulerDiscreteScheduler", **kw})
    chain = chain_from_config(sched, cfg, steps)
    np.testing.assert_allclose(chain.sigmas, ref.sigmas.double().numpy(), rtol=2e-6, atol=0)
    np.testing.assert_allclose(chain.timesteps, ref.timesteps.double().numpy(), rtol=0, atol=1e-3)
    assert chain.lands_clean


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [1, 8, 28])
def test_flow_match_sigmas(shift, steps):
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    ref.set_timesteps(steps)
    sched, cfg = load_scheduler_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": shift})
    chain = chain_from_config(sched, cfg, steps)
    flow_sigma = 1.0 / (1.0 + np.exp(0.5 * chain.logsnr))  # t' = sigma / (alpha + sigma), VP-invariant
    np.testing.assert_allclose(flow_sigma, ref.sigmas.double().numpy(), rtol=1e-6, atol=1e-7)
    assert chain.starts_from_noise and chain.lands_clean


def test_schedule_zoo_matches_diffusers_sd():
    from pifskit import get_schedule

    ref = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    np.testing.assert_allclose(get_schedule("sd").alphas_cumprod, ref.alphas_cumprod.double().numpy(), rtol=2e-6)
    ref2 = diffusers.DDIMScheduler(beta_schedule="linear")
    np.testing.assert_allclose(get_schedule("ddpm").alphas_cumprod, ref2.alphas_cumprod.double().numpy(), rtol=2e-6)


@pytest.mark.parametrize("bad, msg", [
    ({"_class_name": "FancyScheduler"}, "unsupported scheduler class"),
    ({"beta_schedule": "quadratic"}, "unknown beta_schedule"),
    ({"trained_betas": [0.1, 0.2], "num_train_timesteps": 3}, "trained_betas has 2"),
    ({"timestep_spacing": "middle"}, "unknown timestep_spacing"),
    ({"num_train_timesteps": "1000"}, "must be an integer"),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True}, "use_dynamic_shifting"),
])
def test_bad_configs(bad, msg):
    with pytest.raises(PifsError, match=msg):
        load_scheduler_config(bad)


def test_malformed_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(PifsError, match="malformed"):
        load_scheduler_config(p)
    with pytest.raises(PifsError, match="not found"):
        load_scheduler_config(tmp_path / "missing.json")


def test_too_many_steps():
    sched, cfg = load_scheduler_config({"_class_name": "DDIMScheduler"})
    with pytest.raises(PifsError, match="<= 1000"):
        chain_from_config(sched, cfg, 1001)


def test_explicit_timesteps_chain_matches_diffusers_custom_timesteps():
    sched, cfg = load_scheduler_config({"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear",
                                        "beta_start": 0.00085, "beta_end": 0.012})
    ts = [999, 850, 736, 645, 545, 455, 343, 233, 124, 24]
    chain = Chain.from_timesteps(sched, ts)
    ref = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    np.testing.assert_allclose(chain.alpha_bar[:-1], ref.alphas_cumprod[ts].double().numpy(), rtol=2e-6)


def test_diffusers_trailing_extra_timestep_is_not_reproduced():
    # diffusers' trailing rule emits N + 1 timesteps ending with -1 for N = 121 at T = 1000 (floating arange);
    # pifskit returns the N well-formed ones, which equal diffusers' first N.
    ref = diffusers.DDIMScheduler(timestep_spacing="trailing")
    ref.set_timesteps(121)
    sched, cfg = load_scheduler_config({"_class_name": "DDIMScheduler", "timestep_spacing": "trailing"})
    chain = chain_from_config(sched, cfg, 121)
    if len(ref.timesteps) == 122:  # the diffusers version in use has the quirk
        assert int(ref.timesteps[-1]) == -1
    np.testing.assert_array_equal(chain.timesteps, ref.timesteps.numpy()[:121])
    assert chain.timesteps.min() >= 0
