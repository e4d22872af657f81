"""Deterministic DDIM sampling of a trained pifskit model over any pifskit chain (one
:func:`pifskit.torch.adapter.rollout`); sigma / logSNR chains feed the model fractional training timesteps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .._validate import PifsError, check_positive_int
from ..chains import Chain
from ..schedules import DiscreteSchedule
from .adapter import ChainDenoiser, ModelDenoiser, rollout


@torch.no_grad()
def ddim_sample(model: torch.nn.Module, prediction: str, schedule: DiscreteSchedule, chain: Chain, n: int,
                image_shape: tuple[int, int, int], *, seed: int = 0, batch_size: int = 256, device="cpu",
                clip: bool = False, x_init: torch.Tensor | None = None) -> np.ndarray:
    """``n`` samples (n, C, H, W) float32, from x_init ~ N(0, I) drawn with ``seed``.

    ``clip`` clamps the x0 estimate to [-1, 1] at every step (diffusers' clip_sample).
    """
    n = check_positive_int(n, "n")
    if prediction == "epsilon" and chain.starts_from_noise:
        raise PifsError("an epsilon-prediction model has no x0 estimate at pure noise (a = 0); use a chain "
                        "that starts below pure noise (e.g. trailing spacing of the training schedule)")
    ts_fn = None
    if chain.timesteps is None:  # sigma / logSNR chains: fractional training timesteps of the levels
        ts_fn = lambda l: schedule.timestep_of_sigma(np.exp(-0.5 * np.asarray(l, dtype=np.float64)))  # noqa: E731
    cd = ChainDenoiser(ModelDenoiser(model, prediction, "discrete", timestep_fn=ts_fn), chain)
    if x_init is None:
        g = torch.Generator().manual_seed(int(seed))
        x_init = torch.randn((n,) + tuple(image_shape), generator=g)
    elif tuple(x_init.shape) != (n,) + tuple(image_shape):
        raise PifsError(f"x_init must have shape {(n,) + tuple(image_shape)}, got {tuple(x_init.shape)}")
    if isinstance(model, torch.nn.Module):
        model.eval()
    outs = []
    for lo in range(0, n, batch_size):
        x = x_init[lo:lo + batch_size].to(device=device, dtype=torch.float32)
        x = rollout(cd, x, chain, clip_x0=1.0 if clip else None)[-1]
        if not torch.isfinite(x).all():
            raise PifsError("sampling produced non-finite values (diverged model or chain)")
        outs.append(x.cpu())
    return torch.cat(outs).numpy().astype(np.float32)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] -> uint8 via round((x + 1) * 127.5), clipped."""
    return np.clip(np.round((np.asarray(images, dtype=np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_grid(images: np.ndarray, path: str | Path, nrow: int | None = None, pad: int = 2,
              scale: int | None = None) -> Path:
    """Save (N, C, H, W) images in [-1, 1] as one PNG grid (``nrow`` per row; default ceil(sqrt(N))).

    Each image is upscaled by ``scale`` (nearest neighbour; default: to at least 32 px a side)
    and separated by ``pad`` pixels of white.
    """
    from matplotlib.image import imsave

    x = to_uint8(images)
    scale = max(1, -(-32 // max(x.shape[2:]))) if scale is None else check_positive_int(scale, "scale")
    x = x.repeat(scale, axis=2).repeat(scale, axis=3)
    N, C, H, W = x.shape
    nrow = nrow or int(math.ceil(math.sqrt(N)))
    rows = int(math.ceil(N / nrow))
    grid = np.full((rows * (H + pad) + pad, nrow * (W + pad) + pad, C), 255, np.uint8)
    for k in range(N):
        r, q = divmod(k, nrow)
        grid[pad + r * (H + pad):pad + r * (H + pad) + H, pad + q * (W + pad):pad + q * (W + pad) + W] = \
            x[k].transpose(1, 2, 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, grid[..., 0] if C == 1 else grid, cmap="gray", vmin=0, vmax=255)
    return path
