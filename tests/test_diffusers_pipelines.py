"""Real diffusers pipelines (tiny random components, built offline) run pifskit's designed steps.

Each test runs the pipeline with ``schedule_kwargs(pipe, N)`` and spies on the denoiser's forward
calls: the noise levels the model actually saw must be the levels pifskit's designer produced for
that scheduler's solver (recomputed here from the designer, independently of the interop code).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from _tiny_diffusers import SD_KW, TimestepSpy, flux_pipeline, sd3_pipeline, sd_pipeline  # noqa: E402
from diffusers import (  # noqa: E402
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from pifskit import PifsError  # noqa: E402
from pifskit.design.steps import optimal_steps  # noqa: E402
from pifskit.interop.scheduler_kwargs import plan_schedule, schedule_kwargs, with_custom_timesteps  # noqa: E402
from pifskit.schedules import DiscreteSchedule, RectifiedFlowSchedule  # noqa: E402
from pifskit.spectra import powerlaw  # noqa: E402

N = 4
SPECTRUM = powerlaw(64, 4, 1.5, 1.0)  # `pifskit design steps`' default data model
SD_SCHEDULE = DiscreteSchedule.scaled_linear(1000, 0.00085, 0.012)
TABLE = SD_SCHEDULE.sigmas_table
SOLVER_AWARE = "solver" in inspect.signature(optimal_steps).parameters


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    yield


def designed(schedule, solver):
    return optimal_steps(schedule, SPECTRUM, N, **({"solver": solver} if SOLVER_AWARE and solver else {}))


def run(pipe, model, size=8, **kw):
    spy = TimestepSpy(model)
    try:
        extra = {"max_sequence_length": 8} if "max_sequence_length" in inspect.signature(pipe.__call__).parameters \
            else {}
        out = pipe("a cat", height=size, width=size, output_type="latent", guidance_scale=1.0,
                   generator=torch.Generator().manual_seed(0), **extra, **kw)
    finally:
        spy.remove()
    assert torch.isfinite(out.images).all()
    return np.array(spy.per_call())


def sigma_log_interp(t):
    """diffusers' _sigma_to_t inverted: log sigma interpolated linearly between training timesteps."""
    return np.exp(np.interp(t, np.arange(TABLE.size), np.log(TABLE)))


def test_euler_sd_pipeline_model_sees_designed_sigmas(tmp_path):
    pipe = sd_pipeline(EulerDiscreteScheduler(**SD_KW), tmp_path)
    plan = plan_schedule(pipe, N)
    assert list(plan.kwargs) == ["sigmas"] and len(plan.kwargs["sigmas"]) == N + 1
    seen = run(pipe, pipe.unet, **plan.kwargs)
    d = designed(SD_SCHEDULE, plan.solver)
    assert seen.size == N
    np.testing.assert_allclose(sigma_log_interp(seen), d.sigmas[:-1], rtol=1e-4)
    np.testing.assert_allclose(pipe.scheduler.sigmas.numpy(), d.sigmas, rtol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: DPMSolverMultistepScheduler(**SD_KW),
    lambda: with_custom_timesteps(UniPCMultistepScheduler(**SD_KW)),
], ids=["dpmpp2m", "unipc"])
def test_multistep_sd_pipeline_model_sees_designed_timesteps(tmp_path, make):
    pipe = sd_pipeline(make(), tmp_path)
    plan = plan_schedule(pipe, N)
    assert list(plan.kwargs) == ["timesteps"]
    seen = run(pipe, pipe.unet, **plan.kwargs)
    d = designed(SD_SCHEDULE, plan.solver)
    assert seen.tolist() == d.timesteps.tolist()
    np.testing.assert_allclose(TABLE[seen.astype(int)], d.timestep_chain.sigmas[:-1], rtol=1e-6)
    # the solver stepped on exactly those levels and landed clean (diffusers forms sqrt((1 - ab) / ab) in
    # float32: at timestep 0, 1 - ab = 8.5e-4 carries ~1e-5 relative rounding; the issue asks for 1e-4)
    np.testing.assert_allclose(pipe.scheduler.sigmas.numpy(), d.timestep_chain.sigmas, rtol=1e-4)


def test_unipc_without_the_wrapper_is_refused_with_the_swap(tmp_path):
    pipe = sd_pipeline(UniPCMultistepScheduler(**SD_KW), tmp_path)
    with pytest.raises(PifsError, match=r"DPMSolverMultistepScheduler\.from_config\(pipe\.scheduler\.config\)"):
        schedule_kwargs(pipe, N)


def test_heun_sd_pipeline_fractional_timesteps_give_the_exact_sigmas(tmp_path):
    pipe = sd_pipeline(HeunDiscreteScheduler(**SD_KW), tmp_path)
    plan = plan_schedule(pipe, N)
    seen = run(pipe, pipe.unet, **plan.kwargs)
    d = designed(SD_SCHEDULE, plan.solver)
    assert seen.size == 2 * N - 1  # Heun: two calls per step, Euler on the last one
    lin = np.interp(seen, np.arange(TABLE.size), TABLE)  # Heun's sigma(t): linear between knots
    np.testing.assert_allclose(lin, np.concatenate([d.sigmas[:1], np.repeat(d.sigmas[1:-1], 2)]), rtol=1e-5)


def flow_designed(shift, solver):
    d = designed(RectifiedFlowSchedule(shift), solver)
    fs = getattr(d, "flow_sigmas", None)
    if fs is None:  # the contract: N values in (0, 1], first 1.0 (pure noise)
        fs = d.sigmas[:-1] / (1.0 + d.sigmas[:-1])
        fs[0] = 1.0
    return np.asarray(fs)


def test_sd3_pipeline_static_shift_is_not_applied_twice(tmp_path):
    pipe = sd3_pipeline(FlowMatchEulerDiscreteScheduler(shift=3.0), tmp_path)
    plan = plan_schedule(pipe, N)
    seen = run(pipe, pipe.transformer, **plan.kwargs) / 1000.0
    want = flow_designed(3.0, plan.solver)
    np.testing.assert_allclose(seen, want, rtol=1e-5, atol=1e-6)
    # control: the designed levels handed over as they are get shifted again by the scheduler
    trap = run(pipe, pipe.transformer, sigmas=[float(v) for v in want]) / 1000.0
    assert np.max(np.abs(trap - want)) > 0.05


def test_sd3_pipeline_dynamic_shifting_uses_the_pipelines_mu(tmp_path):
    pipe = sd3_pipeline(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=16,
                                                        max_image_seq_len=256, base_shift=0.5, max_shift=1.15),
                        tmp_path)
    plan = plan_schedule(pipe, N, height=8, width=8)
    # the pipeline's mu: latent 8 x 8, patch 1 -> 64 tokens, on the line through (16, 0.5) and (256, 1.15)
    mu = 0.5 + (64 - 16) * (1.15 - 0.5) / (256 - 16)
    assert plan.kwargs["mu"] == pytest.approx(mu)
    seen = run(pipe, pipe.transformer, **plan.kwargs) / 1000.0
    np.testing.assert_allclose(seen, flow_designed(float(np.exp(mu)), plan.solver), rtol=1e-5, atol=1e-6)
    # without mu in the call the pipeline computes the same one itself
    kw = {k: v for k, v in plan.kwargs.items() if k != "mu"}
    np.testing.assert_allclose(run(pipe, pipe.transformer, **kw) / 1000.0, seen, rtol=1e-6)


def test_unipc_custom_timesteps_reproduce_stock_unipc_exactly(tmp_path):
    """with_custom_timesteps(UniPC) given UniPC's own timesteps runs the identical solver (same latents)."""
    stock = UniPCMultistepScheduler(**SD_KW, timestep_spacing="trailing")
    stock.set_timesteps(N)
    ts = stock.timesteps.tolist()
    pipe = sd_pipeline(UniPCMultistepScheduler(**SD_KW, timestep_spacing="trailing"), tmp_path)
    kw = {"height": 8, "width": 8, "output_type": "latent", "guidance_scale": 1.0}
    ref = pipe("a cat", num_inference_steps=N, generator=torch.Generator().manual_seed(0), **kw).images
    with_custom_timesteps(pipe)
    out = pipe("a cat", timesteps=ts, generator=torch.Generator().manual_seed(0), **kw).images
    np.testing.assert_allclose(pipe.scheduler.sigmas.numpy(), stock.sigmas.numpy(), rtol=1e-6)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


def test_flux_pipeline_dynamic_shift_from_height_and_width(tmp_path):
    """FluxPipeline computes mu itself (no mu= in its __call__): the sigmas are pre-inverted for that mu."""
    pipe = flux_pipeline(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=16,
                                                         max_image_seq_len=256), tmp_path)
    plan = plan_schedule(pipe, N, height=16, width=16)
    assert list(plan.kwargs) == ["sigmas"]
    # Flux packs 2 x 2 latent patches: 16 px / vae 1 / 2 = 8 -> 64 tokens
    mu = 0.5 + (64 - 16) * (1.15 - 0.5) / (256 - 16)
    assert plan.mu == pytest.approx(mu)
    seen = run(pipe, pipe.transformer, size=16, **plan.kwargs)  # Flux's transformer gets t' (timestep / 1000)
    np.testing.assert_allclose(seen, flow_designed(float(np.exp(mu)), plan.solver), rtol=1e-5, atol=1e-6)
    # at another size the pipeline's own mu differs, and so do the levels: the call must use the same size
    other = run(pipe, pipe.transformer, size=32, **plan.kwargs)
    assert np.max(np.abs(other - seen)) > 1e-3
