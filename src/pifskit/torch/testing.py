"""Tiny seeded models for tests and examples; ``tiny_dit`` / ``tiny_mlp`` are ``module:factory`` entry points
returning ``(model, info)``."""

from __future__ import annotations

import math

import torch
from torch import nn

from .models.common import timestep_embedding


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ada = nn.Linear(dim, 4 * dim)  # adaLN: shift/scale for the two sub-blocks
        self.heads = heads

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        B, T, D = h.shape
        sh1, sc1, sh2, sc2 = self.ada(c)[:, None].chunk(4, dim=-1)
        y = self.norm1(h) * (1 + sc1) + sh1
        q, k, v = self.qkv(y).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // self.heads), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, D)
        h = h + self.proj(y)
        y = self.norm2(h) * (1 + sc2) + sh2
        return h + self.mlp(y)


class TinyDiT(nn.Module):
    """A minimal DiT: patchify (p x p, all channels) -> L attention blocks with adaLN time conditioning -> unpatchify.

    ``forward(x, t)`` with x (B, C, H, W) and t (B,) (or a scalar) returns (B, C, H, W).
    """

    def __init__(self, channels: int = 1, size: int = 8, patch: int = 2, dim: int = 32, depth: int = 2,
                 heads: int = 2, time_scale: float = 1.0):
        super().__init__()
        self.channels, self.size, self.patch = channels, size, patch
        self.n_tokens = (size // patch) ** 2
        pdim = channels * patch * patch
        self.embed = nn.Linear(pdim, dim)
        self.pos = nn.Parameter(0.02 * torch.randn(1, self.n_tokens, dim))
        self.temb = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList([_Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.out = nn.Linear(dim, pdim)
        self.dim = dim
        self.time_scale = time_scale

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.patch
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(B)
        tok = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, -1, C * p * p)
        h = self.embed(tok) + self.pos
        c = self.temb(timestep_embedding(t * self.time_scale, self.dim, dtype=x.dtype))
        for blk in self.blocks:
            h = blk(h, c)
        out = self.out(self.norm(h))
        return out.reshape(B, H // p, W // p, C, p, p).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


class TinyMLPDenoiser(nn.Module):
    """x0-predicting MLP on flattened images with a time embedding (for regulariser tests/benchmarks)."""

    def __init__(self, shape=(1, 8, 8), hidden: int = 64, time_dim: int = 16):
        super().__init__()
        self.shape = tuple(shape)
        d = int(torch.tensor(self.shape).prod())
        self.time_dim = time_dim
        self.net = nn.Sequential(nn.Linear(d + time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, d))

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        B = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(B)
        h = torch.cat([x.reshape(B, -1), timestep_embedding(t, self.time_dim, dtype=x.dtype)], dim=-1)
        return self.net(h).reshape(x.shape)


def tiny_dit(seed: int = 0, size: int = 8, channels: int = 1, patch: int = 2, dim: int = 32, depth: int = 2):
    """Entry point: a seeded random TinyDiT (epsilon prediction, DDPM discrete timesteps) and its info."""
    torch.manual_seed(seed)
    model = TinyDiT(channels=channels, size=size, patch=patch, dim=dim, depth=depth).eval()
    info = {"prediction_type": "epsilon", "sample_shape": [channels, size, size], "timestep_convention": "discrete",
            "schedule": "ddpm", "patch": patch}
    return model, info


def tiny_mlp(seed: int = 0, size: int = 8, channels: int = 1, hidden: int = 64):
    """Entry point: a seeded random x0-predicting MLP on continuous t in [0, 1] (cosine schedule)."""
    torch.manual_seed(seed)
    model = TinyMLPDenoiser((channels, size, size), hidden).eval()
    info = {"prediction_type": "sample", "sample_shape": [channels, size, size], "timestep_convention": "continuous",
            "schedule": "cosine", "patch": 2}
    return model, info
