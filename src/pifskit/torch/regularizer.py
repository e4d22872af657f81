"""The PIFS regulariser (theory section 2): penalise block-row sums of dD_t/dx above a per-step budget.

R = mean d_i^2 relu(rho_r - B_i)^2 (``scale='step'``) or mean relu(rho_r / B_i - 1)^2 (``'relative'``), rho_r the
probe estimate of sum_j ||dD_r/dx_j||_F; budget B_i = L*_i (1 + margin) (``'lstar'``),
max(L*_i, L_B^F(Gaussian-optimal)) (1 + margin) (``'gaussian'``) or an array. Bias: docs/torch.md#pifs-regulariser.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .._validate import PifsError, check_choice, check_positive_int
from ..chains import Chain
from ..geometry import contraction_threshold, step_coefficients
from ..spectra import Spectrum
from .blocks import Partition, estimate_block_row_sums, gaussian_block_row_sums


def step_budgets(chain: Chain, budget: str | np.ndarray = "lstar", *, margin: float = 0.0,
                 spectrum: Spectrum | None = None, partition: Partition | None = None) -> np.ndarray:
    """Per-step budget B_i in denoiser units (module docstring), length N; ``partition`` and a stationary
    ``spectrum`` for the 'gaussian' budget."""
    lstar = contraction_threshold(chain)
    if not isinstance(budget, str):
        b = np.asarray(budget, dtype=np.float64)
        if b.shape != lstar.shape or not np.isfinite(b).all() or (b <= 0).any():
            raise PifsError(f"explicit budget must be {lstar.size} positive finite values (one per step)")
        return b * (1.0 + margin)
    check_choice(budget, "budget", ("lstar", "gaussian"))
    if not margin > -1:
        raise PifsError(f"margin must be > -1, got {margin}")
    if budget == "lstar":
        return lstar * (1.0 + margin)
    if spectrum is None or spectrum.power_grid is None:
        raise PifsError("the 'gaussian' budget needs a stationary spectrum with a power grid (e.g. powerlaw:2)")
    if partition is None or partition.kind != "patches":
        raise PifsError("the 'gaussian' budget needs a patch partition of a C x H x W image")
    C, H, W = partition.sample_shape
    if spectrum.power_grid.shape != (H, W):
        raise PifsError(f"spectrum power grid is {spectrum.power_grid.shape}, the model's images are {H}x{W}")
    floor = gaussian_block_row_sums(chain.logsnr[:-1], spectrum.power_grid, partition.patch, "fro", channels=C)
    return np.maximum(lstar, floor) * (1.0 + margin)


def pifs_regularizer(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x_t: torch.Tensor,
                     steps: torch.Tensor, partition: Partition, budgets: np.ndarray, d_coef: np.ndarray, *,
                     n_blocks: int = 1, n_probes: int = 1, scale: str = "step",
                     generator: torch.Generator | None = None, chunk_size: int | None = None) -> torch.Tensor:
    """Functional form: R for noisy inputs ``x_t`` (B, *shape) at chain steps ``steps`` (B,).

    ``denoise(x, steps)`` returns D at those steps (batched); ``budgets`` and ``d_coef`` are the
    per-step B_i and d_i arrays. Differentiable with respect to the model's parameters.
    """
    check_choice(scale, "scale", ("step", "relative"))
    steps = torch.as_tensor(steps, dtype=torch.long)
    if steps.shape != (x_t.shape[0],):
        raise PifsError(f"steps must have shape ({x_t.shape[0]},), got {tuple(steps.shape)}")
    m = min(int(n_blocks), partition.n_blocks)
    idx = steps.cpu().numpy()
    B0 = idx.size
    # fn acts per sample on any multiple of the batch (folded probes): tile the step indices
    rho, _ = estimate_block_row_sums(lambda v: denoise(v, np.tile(idx, v.shape[0] // B0)), x_t, partition, n_blocks=m,
                                     n_probes=n_probes, generator=generator, chunk_size=chunk_size,
                                     create_graph=True)
    B = torch.as_tensor(budgets[idx], dtype=rho.dtype, device=rho.device)[:, None]
    if scale == "step":
        dc = torch.as_tensor(d_coef[idx], dtype=rho.dtype, device=rho.device)[:, None]
        excess = dc * (rho - B)
    else:
        excess = rho / B - 1.0
    return torch.relu(excess).pow(2).mean()


class PIFSRegularizer(nn.Module):
    """Module form: ``reg(chain_denoiser, x0)`` noises a clean batch at random chain steps and returns R.

    ``sample_fraction`` of the batch (at least one sample) is regularised at ``n_blocks * n_probes`` JVPs per
    sample (defaults: about 1.5x a plain training step, benchmarks/bench_regularizer.py); with one block the
    penalty is in expectation an upper bound of the hinge of the true row sum.
    """

    def __init__(self, chain: Chain, partition: Partition, budget: str | np.ndarray = "lstar", *,
                 spectrum: Spectrum | None = None, margin: float = 0.0, n_blocks: int = 1, n_probes: int = 1,
                 sample_fraction: float = 0.125, scale: str = "step", chunk_size: int | None = None):
        super().__init__()
        self.chain = chain
        self.partition = partition
        self.budgets = step_budgets(chain, budget, margin=margin, spectrum=spectrum, partition=partition)
        self.d_coef = step_coefficients(chain)[1]
        self.n_blocks = check_positive_int(n_blocks, "n_blocks")
        self.n_probes = check_positive_int(n_probes, "n_probes")
        if not 0 < sample_fraction <= 1:
            raise PifsError(f"sample_fraction must lie in (0, 1], got {sample_fraction}")
        self.sample_fraction = float(sample_fraction)
        self.scale = check_choice(scale, "scale", ("step", "relative"))
        self.chunk_size = chunk_size

    def forward(self, chain_denoiser, x0: torch.Tensor, steps: torch.Tensor | None = None,
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        n = max(1, round(self.sample_fraction * x0.shape[0]))
        x0 = x0[:n]
        if steps is None:
            steps = torch.randint(0, self.chain.n_steps, (n,), generator=generator)
        else:
            steps = torch.as_tensor(steps, dtype=torch.long)[:n]
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        else:
            noise = noise[:n]
        idx = steps.cpu().numpy()
        a, s = (torch.as_tensor(v[idx], dtype=x0.dtype, device=x0.device).reshape((-1,) + (1,) * (x0.dim() - 1))
                for v in (self.chain.a, self.chain.s))
        x_t = a * x0 + s * noise
        return pifs_regularizer(chain_denoiser.denoise, x_t, steps, self.partition, self.budgets, self.d_coef,
                                n_blocks=self.n_blocks, n_probes=self.n_probes, scale=self.scale,
                                generator=generator, chunk_size=self.chunk_size)
