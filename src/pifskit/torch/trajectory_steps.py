"""Model-aware sampling steps for ``--model ENTRY``: :func:`pifskit.design.trajectory.trajectory_steps` run on
a model entry's denoiser (a pifskit checkpoint, or an exact mixture for validation)."""

from __future__ import annotations

from ..design.trajectory import TrajectoryDesign, trajectory_steps
from .model_spectrum import ModelEntry, numpy_denoiser


def trajectory_steps_for_entry(me: ModelEntry, sigma_range: tuple[float, float], steps: int, *,
                               clip: bool | None = None, **kw) -> TrajectoryDesign:
    """The design on ``me``; ``clip`` (default: for a checkpoint, whose images lie in [-1, 1], not for a
    mixture) clamps the x0 estimate as ``pifskit sample`` does."""
    clip = me.schedule is not None if clip is None else clip
    return trajectory_steps(numpy_denoiser(me.denoise, me.dtype, clip), me.d, sigma_range, steps, **kw)
