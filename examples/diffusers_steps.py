"""Run a diffusers sampler on pifskit's W2-optimal steps.

A tiny randomly initialised UNet2DModel is built locally (no download), so the
images are noise; the point is the plumbing. With a real pipeline, pass the
same kwargs: ``pipe(prompt, **pipeline_kwargs(design.chain, pipe.scheduler))``
(Euler-family schedulers take ``sigmas=``; DDPM / DPM-Solver take ``timesteps=``).

    python examples/diffusers_steps.py [--steps 4]
"""

from __future__ import annotations

import argparse

import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler, UNet2DModel

from pifskit.design.steps import baseline_chains, optimal_steps, w2_surrogate
from pifskit.interop.scheduler_kwargs import pipeline_kwargs
from pifskit.schedules import get_schedule
from pifskit.spectra import powerlaw

SD15 = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def sample(unet: UNet2DModel, scheduler, kwargs: dict, seed: int = 0) -> tuple[torch.Tensor, list[float]]:
    """The denoising loop of a diffusers pipeline, after ``scheduler.set_timesteps(**kwargs)``."""
    scheduler.set_timesteps(**kwargs)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size, generator=g)
    x = x * scheduler.init_noise_sigma
    seen = []
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = unet(scheduler.scale_model_input(x, t), t).sample
            seen.append(float(t))
            x = scheduler.step(eps, t, x, generator=g).prev_sample
    return x, seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()

    sd = get_schedule("sd")
    spectrum = powerlaw(8, 3, 2.0, 1.0)  # use your data's spectrum (pifskit.spectra.from_data / from_file)
    design = optimal_steps(sd, spectrum, args.steps)
    print("pifskit sigmas   :", [round(float(s), 4) for s in design.sigmas])
    print("pifskit timesteps:", design.timesteps.tolist())
    print(f"surrogate W2     : {design.w2:.4f}  (karras rho=7: "
          f"{w2_surrogate(baseline_chains(sd, args.steps)['karras-rho7'], spectrum):.4f})")

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4).eval()

    euler = EulerDiscreteScheduler(**SD15)
    kw = pipeline_kwargs(design.chain, euler)          # {"sigmas": [...]}
    x, seen = sample(unet, euler, kw)
    print("Euler  used sigmas   :", [round(float(s), 4) for s in euler.sigmas], "at timesteps",
          [round(t, 2) for t in seen], "-> sample std", round(float(x.std()), 4))

    ddpm = DDPMScheduler(**SD15)
    kw = pipeline_kwargs(design.timestep_chain, ddpm)  # {"timesteps": [...]}
    x, seen = sample(unet, ddpm, kw)
    print("DDPM   used timesteps:", [int(t) for t in seen], "-> sample std", round(float(x.std()), 4))


if __name__ == "__main__":
    main()
