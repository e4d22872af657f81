"""Pieces shared by the DiT and the U-Net: timestep embedding, prediction parameterisations."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..._validate import PifsError, check_choice

PREDICTIONS = ("epsilon", "sample", "v_prediction")
_ALIASES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def normalize_prediction(name: str) -> str:
    """'eps' / 'x0' / 'v' or diffusers' names -> 'epsilon' / 'sample' / 'v_prediction'."""
    return check_choice(_ALIASES.get(name, name), "prediction type", PREDICTIONS)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos(t w_k), sin(t w_k)], w_k = max_period^(-k / (dim/2)), k < dim/2."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def as_time_tensor(t, batch: int, device) -> torch.Tensor:
    """t as a float (B,) tensor: a scalar is broadcast; integer training timesteps become floats."""
    t = torch.as_tensor(t, device=device)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise PifsError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t.float()


class TimestepEmbedder(nn.Module):
    """t -> MLP(sinusoidal(t)): Linear(freq_dim, dim), SiLU, Linear(dim, dim)."""

    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1)).to(like.dtype)


def training_target(prediction: str, x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor,
                    s: torch.Tensor) -> torch.Tensor:
    """What the network regresses: eps; x0; or v = a eps - s x0 (a, s per sample)."""
    if prediction == "epsilon":
        return eps
    if prediction == "sample":
        return x0
    return _bcast(a, x0) * eps - _bcast(s, x0) * x0


def prediction_to_x0(prediction: str, out: torch.Tensor, x: torch.Tensor, a: torch.Tensor,
                     s: torch.Tensor) -> torch.Tensor:
    """The x0 estimate D(x): (x - s eps)/a; x0; or a x - s v."""
    if prediction == "sample":
        return out
    if prediction == "epsilon":
        return (x - _bcast(s, x) * out) / _bcast(a, x)
    return _bcast(a, x) * x - _bcast(s, x) * out


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))
