"""Integration: pifskit's W2-optimal steps run in real diffusers schedulers with a tiny local UNet."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DModel,
)

from pifskit import PifsError
from pifskit.chains import Chain
from pifskit.design.steps import optimal_steps
from pifskit.interop.diffusers import (
    accepted_kwargs,
    pipeline_kwargs,
    scheduler_schedule,
    set_chain,
)
from pifskit.schedules import get_schedule
from pifskit.spectra import powerlaw

SD_KW = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()


@pytest.fixture(scope="module")
def design():
    return optimal_steps(get_schedule("sd"), powerlaw(8, 3, 2.0, 1.0), 3)


def run(unet, scheduler, kwargs):
    """The loop every diffusers pipeline runs after retrieve_timesteps(scheduler, **kwargs)."""
    scheduler.set_timesteps(**kwargs)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 8, 8, generator=g) * scheduler.init_noise_sigma
    seen = []
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(scheduler.scale_model_input(x, t), t).sample
            seen.append(float(t))
            x = scheduler.step(eps, t, x, generator=g).prev_sample
    return x, seen


def test_euler_runs_pifskit_sigmas(unet, design):
    sched = EulerDiscreteScheduler(**SD_KW)
    kw = pipeline_kwargs(design.chain, sched)
    assert list(kw) == ["sigmas"]
    np.testing.assert_allclose(kw["sigmas"], design.sigmas)
    x, seen = run(unet, sched, kw)
    assert torch.isfinite(x).all()
    # the scheduler holds exactly pifskit's levels (float32) and evaluated the model at their timesteps
    np.testing.assert_allclose(sched.sigmas.numpy(), design.sigmas.astype(np.float32), rtol=1e-6)
    assert len(seen) == design.n_steps == 3
    np.testing.assert_allclose(seen, get_schedule("sd").timestep_of_sigma(design.sigmas[:-1]), atol=2e-3)


def test_ddpm_runs_pifskit_timesteps(unet, design):
    sched = DDPMScheduler(**SD_KW)
    kw = pipeline_kwargs(design.timestep_chain, sched)
    assert list(kw) == ["timesteps"]
    assert kw["timesteps"] == design.timesteps.tolist()
    x, seen = run(unet, sched, kw)
    assert torch.isfinite(x).all()
    assert seen == [float(t) for t in design.timesteps]
    # each step goes to the next listed timestep, the last one to the clean end
    prev = [int(sched.previous_timestep(torch.tensor(t))) for t in design.timesteps]
    assert prev == design.timesteps[1:].tolist() + [-1]


def test_timesteps_derived_from_sigmas_when_the_chain_has_none(design):
    sched = DPMSolverMultistepScheduler(**SD_KW)
    assert accepted_kwargs(sched) == ("timesteps",)
    chain = Chain.from_sigmas(design.sigmas)  # no schedule: no timesteps attached
    kw = set_chain(sched, chain)
    frac = scheduler_schedule(sched).timestep_of_sigma(design.sigmas[:-1])
    assert np.max(np.abs(np.array(kw["timesteps"]) - frac)) <= 0.5  # rounded, no repair needed at 3 steps
    np.testing.assert_allclose(scheduler_schedule(sched).alphas_cumprod, get_schedule("sd").alphas_cumprod,
                               rtol=1e-6)
    assert sched.timesteps.tolist() == kw["timesteps"]


def test_prefer_and_unsupported_scheduler(design):
    euler = EulerDiscreteScheduler(**SD_KW)
    assert list(pipeline_kwargs(design.timestep_chain, euler, prefer="timesteps")) == ["timesteps"]
    with pytest.raises(PifsError, match="neither sigmas= nor timesteps="):
        pipeline_kwargs(design.chain, DDIMScheduler(**SD_KW))
    with pytest.raises(PifsError):
        pipeline_kwargs([1.0, 0.0], euler)
