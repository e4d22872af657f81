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
from pifskit.interop.scheduler_kwargs import (
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


# ---------------------------------------------------------------------------
# schedule_kwargs vs `pifskit design steps --diffusers-config`, and the CLI twin
# ---------------------------------------------------------------------------

import inspect  # noqa: E402
import json  # noqa: E402
import types  # noqa: E402

from diffusers import FlowMatchEulerDiscreteScheduler, HeunDiscreteScheduler, UniPCMultistepScheduler  # noqa: E402

from pifskit.cli import main  # noqa: E402
from pifskit.interop.scheduler_kwargs import (  # noqa: E402
    DEFAULT_CHANNELS,
    DEFAULT_PIXEL_VARIANCE,
    DEFAULT_RESOLUTION,
    DEFAULT_SPECTRUM,
    SOLVER_OF_SCHEDULER,
    plan_schedule,
    schedule_kwargs,
    solver_for,
    with_custom_timesteps,
)


def test_default_data_model_is_design_steps_default():
    from pifskit.cli import design_cmd

    p = __import__("argparse").ArgumentParser()
    sub = p.add_subparsers()
    design_cmd.register(sub)
    args = p.parse_args(["design", "steps"])
    assert (args.spectrum, args.resolution, args.channels, args.pixel_variance) == \
        (DEFAULT_SPECTRUM, DEFAULT_RESOLUTION, DEFAULT_CHANNELS, DEFAULT_PIXEL_VARIANCE)


@pytest.mark.parametrize("cls, kw", [
    (EulerDiscreteScheduler, SD_KW), (HeunDiscreteScheduler, SD_KW), (DDPMScheduler, SD_KW),
    (DPMSolverMultistepScheduler, SD_KW), (FlowMatchEulerDiscreteScheduler, {"shift": 3.0}),
], ids=["euler", "heun", "ddpm", "dpmpp2m", "flowmatch-shift3"])
def test_schedule_kwargs_equals_design_steps_cli_and_the_scheduler_holds_it(tmp_path, capsys, cls, kw):
    sched = cls(**kw)
    sched.save_config(tmp_path)
    N = 6
    plan = plan_schedule(sched, N)
    argv = ["design", "steps", "--diffusers-config", str(tmp_path / "scheduler_config.json"), "--steps", str(N),
            "--json"] + (["--solver", plan.solver] if plan.solver else [])
    rc = main(argv)
    out, err = capsys.readouterr()
    flow = cls is FlowMatchEulerDiscreteScheduler
    if flow and rc != 0 and "inf" in err:
        pytest.skip(f"`design steps` cannot design flow schedules yet (issue 11, helper 'steps'): {err.strip()}")
    assert rc == 0, err
    cli = json.loads(out)
    sched.set_timesteps(**plan.kwargs)
    if flow:
        if "flow_sigmas" not in cli:
            pytest.skip("`design steps --json` has no flow_sigmas yet (issue 11's contract)")
        np.testing.assert_allclose(plan.flow_sigmas, cli["flow_sigmas"], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sched.sigmas.numpy()[:-1], cli["flow_sigmas"], rtol=1e-4, atol=1e-6)
        assert sched.sigmas[-1] == 0
    elif cls in (DDPMScheduler, DPMSolverMultistepScheduler):  # timesteps=: the designed integer timesteps
        assert plan.kwargs["timesteps"] == cli["timesteps"] == sched.timesteps.tolist()
        if cls is DPMSolverMultistepScheduler:  # and the solver steps on their sigmas, then lands at 0
            table = get_schedule("sd").sigmas_table
            np.testing.assert_allclose(sched.sigmas.numpy(), np.concatenate([table[cli["timesteps"]], [0.0]]),
                                       rtol=1e-4)
    else:
        np.testing.assert_allclose(plan.levels, cli["sigmas"], rtol=1e-9)
        held = sched.sigmas.numpy()
        if cls is HeunDiscreteScheduler:  # Heun holds every interior level twice
            held = np.concatenate([held[:1], held[1:-1:2], held[-1:]])
        np.testing.assert_allclose(held, cli["sigmas"], rtol=1e-4)


def test_solver_table_covers_the_supported_schedulers():
    for name in ("EulerDiscreteScheduler", "HeunDiscreteScheduler", "DPMSolverMultistepScheduler", "DDPMScheduler",
                 "UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler"):
        assert SOLVER_OF_SCHEDULER[name]
    assert solver_for(DPMSolverMultistepScheduler(**SD_KW))[0] == "dpmpp2m"
    assert solver_for(DPMSolverMultistepScheduler(**SD_KW, solver_order=1)) == ("ddim",)
    assert solver_for(DPMSolverMultistepScheduler(**SD_KW, algorithm_type="sde-dpmsolver++"))[0] == "dpmpp2m-sde"
    assert solver_for(with_custom_timesteps(UniPCMultistepScheduler(**SD_KW)))[0] == "unipc"


def test_traps_have_one_line_fixes():
    with pytest.raises(PifsError, match=r"EulerDiscreteScheduler\.from_config\(scheduler\.config\)"):
        schedule_kwargs(DDIMScheduler(**SD_KW), 4)
    with pytest.raises(PifsError, match="use_karras_sigmas=False"):
        schedule_kwargs(DPMSolverMultistepScheduler(**SD_KW, use_karras_sigmas=True), 4)
    with pytest.raises(PifsError, match="final_sigmas_type='zero'"):
        schedule_kwargs(DPMSolverMultistepScheduler(**SD_KW, final_sigmas_type="sigma_min"), 4)
    with pytest.raises(PifsError, match="shift_terminal=None"):
        schedule_kwargs(FlowMatchEulerDiscreteScheduler(shift=3.0, shift_terminal=0.02), 4)
    with pytest.raises(PifsError, match="pass mu="):
        schedule_kwargs(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), 4)

    class NoSigmasPipeline:  # e.g. a ControlNet pipeline without sigmas=
        scheduler = EulerDiscreteScheduler(**SD_KW)

        def __call__(self, prompt, num_inference_steps=50, timesteps=None):
            pass

    class NeitherPipeline(NoSigmasPipeline):
        def __call__(self, prompt, num_inference_steps=50):
            pass

    kw = schedule_kwargs(NoSigmasPipeline(), 4)  # falls back to Euler's (fractional) timesteps=
    assert list(kw) == ["timesteps"] and len(kw["timesteps"]) == 4
    sched = EulerDiscreteScheduler(**SD_KW)
    sched.set_timesteps(**kw)
    np.testing.assert_allclose(sched.sigmas.numpy(), plan_schedule(sched, 4).levels, rtol=1e-5)
    with pytest.raises(PifsError, match="accepts neither sigmas= nor timesteps="):
        schedule_kwargs(NeitherPipeline(), 4)

    class FlowWithoutSigmas:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)

        def __call__(self, prompt, num_inference_steps=28):
            pass

    with pytest.raises(PifsError, match="has no sigmas="):
        schedule_kwargs(FlowWithoutSigmas(), 4)


def test_dynamic_shift_mu_is_inverted_exactly():
    sched = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    plan = plan_schedule(sched, 5, mu=0.9)
    assert plan.kwargs["mu"] == 0.9
    sched.set_timesteps(**plan.kwargs)
    np.testing.assert_allclose(sched.sigmas.numpy()[:-1], plan.flow_sigmas, rtol=1e-5)
    assert plan.flow_sigmas[0] == 1.0 and (np.diff(plan.flow_sigmas) < 0).all()
    # the same levels as a static shift of exp(mu)
    static = plan_schedule(FlowMatchEulerDiscreteScheduler(shift=float(np.exp(0.9))), 5)
    np.testing.assert_allclose(static.flow_sigmas, plan.flow_sigmas, rtol=1e-9)


def test_cli_twin_line_pasted_into_a_pipeline_runs_the_designed_steps(tmp_path, capsys):
    pytest.importorskip("transformers")
    from _tiny_diffusers import TimestepSpy, sd_pipeline
    from diffusers import PNDMScheduler

    pipe = sd_pipeline(PNDMScheduler(**SD_KW, steps_offset=1, skip_prk_steps=True), tmp_path / "tok")
    pipe.save_pretrained(tmp_path / "sd")
    capsys.readouterr()  # save_pretrained's progress bars
    rc = main(["diffusers-kwargs", "--diffusers-config", str(tmp_path / "sd"), "--steps", "3"])
    err = capsys.readouterr()
    assert rc == 2 and "--scheduler CLASS" in err.err and err.err.count("\n") == 1
    rc = main(["diffusers-kwargs", "--diffusers-config", str(tmp_path / "sd"), "--steps", "3",
               "--scheduler", "DPMSolverMultistepScheduler"])
    code = capsys.readouterr().out
    assert rc == 0 and "pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)" in code
    spy = TimestepSpy(pipe.unet)
    ns = {"pipe": pipe, "prompt": "a cat"}
    exec(code, ns)  # noqa: S102 - the printed lines, pasted
    spy.remove()
    want = plan_schedule(DPMSolverMultistepScheduler(**SD_KW), 3).kwargs["timesteps"]
    assert [int(t) for t in spy.per_call()] == want
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"


@pytest.mark.parametrize("cls, extra", [
    (DPMSolverMultistepScheduler, {}), (UniPCMultistepScheduler, {}),
    (DPMSolverMultistepScheduler, {"final_sigmas_type": "sigma_min"}),
    (DPMSolverMultistepScheduler, {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1}),
])
@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("n", [1, 7, 25])
def test_multistep_config_chain_is_what_set_timesteps_runs(cls, extra, spacing, n):
    from pifskit.scheduler_config import chain_from_config, load_scheduler_config

    kw = {**SD_KW, **extra, "timestep_spacing": spacing, "steps_offset": 1}
    ref = cls(**kw)
    ref.set_timesteps(n)
    sched, cfg = load_scheduler_config({**dict(ref.config), "_class_name": cls.__name__})
    chain = chain_from_config(sched, cfg, n)
    assert np.asarray(chain.timesteps).astype(int).tolist() == ref.timesteps.tolist()
    np.testing.assert_allclose(chain.sigmas, ref.sigmas.numpy(), rtol=2e-5)
