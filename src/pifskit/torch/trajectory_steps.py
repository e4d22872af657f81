"""Model-aware sampling steps for ``--model ENTRY``: :func:`pifskit.design.trajectory.trajectory_steps` run on
a model entry's denoiser (a pifskit checkpoint, or an exact mixture for validation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..design.trajectory import TrajectoryDesign, trajectory_steps
from .model_spectrum import ModelEntry


def numpy_denoiser(me: ModelEntry, clip: bool) -> Callable[[np.ndarray, float], np.ndarray]:
    """denoiser(x (B, d) float64 VP, logsnr) -> x0 (numpy), clamped to [-1, 1] when ``clip``."""

    def den(x: np.ndarray, logsnr: float) -> np.ndarray:
        with torch.no_grad():
            out = me.denoise(torch.as_tensor(x, dtype=me.dtype), float(logsnr))
            return (out.clamp(-1.0, 1.0) if clip else out).double().numpy()

    return den


def trajectory_steps_for_entry(me: ModelEntry, sigma_range: tuple[float, float], steps: int, *,
                               clip: bool | None = None, **kw) -> TrajectoryDesign:
    """The design on ``me``; ``clip`` (default: for a checkpoint, whose images lie in [-1, 1], not for a
    mixture) clamps the x0 estimate as ``pifskit sample`` does."""
    clip = me.schedule is not None if clip is None else clip
    return trajectory_steps(numpy_denoiser(me, clip), me.d, sigma_range, steps, **kw)
