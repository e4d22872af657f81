"""Pieces shared by the DiT and the U-Net: timestep embedding, prediction parameterisations."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..._validate import PifsError
from ...parameterization import normalize_prediction, target_scalings, x0_scalings

#: what pifskit's own networks can be trained to predict (canonical names of pifskit.parameterization)
PREDICTIONS = ("epsilon", "sample", "v_prediction")


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding [cos(t w_k), sin(t w_k)], w_k = max_period^(-k / (dim/2)), k < dim/2, in ``dtype``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def as_time_tensor(t, batch: int, device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """t as a floating (B,) tensor of ``dtype``: a scalar is broadcast; integer timesteps become floats."""
    t = torch.as_tensor(t, device=device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise PifsError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t.to(dtype)


class TimestepEmbedder(nn.Module):
    """t -> MLP(sinusoidal(t)): Linear(freq_dim, dim), SiLU, Linear(dim, dim).

    The sinusoid is computed in the MLP's parameter dtype, so ``model.double()`` runs in float64
    end to end (a float32 embedding would both fail the matmul and cap the precision at 1e-7).
    """

    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        dtype = self.mlp[0].weight.dtype
        return self.mlp(timestep_embedding(t, self.freq_dim, dtype=dtype))


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)


def training_target(prediction: str, x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor,
                    s: torch.Tensor) -> torch.Tensor:
    """What the network regresses: t_x0 x0 + t_eps eps (eps; x0; v = a eps - s x0), a, s per sample."""
    t_x0, t_eps = target_scalings(prediction, _bcast(a, x0), _bcast(s, x0))
    return t_x0 * x0 + t_eps * eps


def prediction_to_x0(prediction: str, out: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                     s: torch.Tensor) -> torch.Tensor:
    """The x0 estimate D(x) = c_skip x + c_out out: (x - s eps)/a; x0; or a x - s v."""
    c_skip, c_out = x0_scalings(prediction, _bcast(a, x), _bcast(s, x))
    return c_skip * x + c_out * out


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))
