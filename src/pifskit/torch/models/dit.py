"""A small Diffusion Transformer (Peebles & Xie 2023): patchify, adaLN-zero blocks, unpatchify.

Tokens are the non-overlapping p x p patches (the PIFS range blocks); ``model(x, t, return_attention=True)``
also returns each block's attention map (B, heads, P, P); ``store_attention`` keeps the last call's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..._validate import PifsError, check_choice, check_positive_int
from ...parameterization import normalize_prediction
from .common import PREDICTIONS, TimestepEmbedder, as_time_tensor


@dataclass
class DiTConfig:
    """Size and parameterisation of a :class:`DiT`."""

    image_size: int = 28
    in_channels: int = 1
    patch_size: int = 4
    width: int = 96
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    pos_emb: str = "sincos"  # or "learned"
    prediction: str = "epsilon"
    arch: str = "dit"

    def __post_init__(self):
        for k in ("image_size", "in_channels", "patch_size", "width", "depth", "heads"):
            check_positive_int(getattr(self, k), k)
        if self.image_size % self.patch_size:
            raise PifsError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.width % self.heads:
            raise PifsError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.width % 4:
            raise PifsError(f"width must be a multiple of 4 (2-D sin-cos embedding), got {self.width}")
        check_choice(self.pos_emb, "pos_emb", ("sincos", "learned"))
        self.prediction = normalize_prediction(self.prediction, PREDICTIONS)
        if self.arch != "dit":
            raise PifsError(f"DiTConfig has arch 'dit', got {self.arch!r}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid ** 2

    def to_dict(self) -> dict:
        return asdict(self)


def sincos_pos_embed_2d(dim: int, grid: int) -> np.ndarray:
    """Fixed 2-D sin-cos embedding (P, dim): half the channels encode the row, half the column."""
    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    return np.concatenate([one_d(dim // 2, rows.ravel()), one_d(dim // 2, cols.ravel())], axis=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head self-attention that returns its map A = softmax(q k^T / sqrt(d_head)) (B, heads, P, P)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, P, W = x.shape
        q, k, v = self.qkv(x).reshape(B, P, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, P, W)
        return self.proj(out), attn


class DiTBlock(nn.Module):
    """x += g1 * Attn(mod(LN(x))); x += g2 * MLP(mod(LN(x))), (shift, scale, gate) x 2 from adaLN(c), zero-init."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        h, attn = self.attn(modulate(self.norm1(x), sh1, sc1))
        x = x + g1[:, None] * h
        x = x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))
        return x, attn


class DiT(nn.Module):
    """``model(x, t)`` -> prediction with x's shape; t: (B,) or scalar training timesteps (int or float)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        c, p, w = config.in_channels, config.patch_size, config.width
        self.patch = nn.Conv2d(c, w, kernel_size=p, stride=p)
        if config.pos_emb == "sincos":
            self.register_buffer("pos", torch.from_numpy(sincos_pos_embed_2d(w, config.grid)).float()[None],
                                 persistent=False)
        else:
            self.pos = nn.Parameter(torch.randn(1, config.num_patches, w) * 0.02)
        self.t_embed = TimestepEmbedder(w)
        self.blocks = nn.ModuleList(DiTBlock(w, config.heads, config.mlp_ratio) for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.out = nn.Linear(w, p * p * c)
        for m in (self.ada_out[1], self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        self.store_attention = False
        self.attention_maps: list[torch.Tensor] = []

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> token embeddings (B, P, width), row-major patch order."""
        return self.patch(x).flatten(2).transpose(1, 2)

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Raw pixels per patch (B, P, p*p*C) in the layout :meth:`unpatchify` inverts."""
        cfg = self.config
        B, g, p, C = x.shape[0], cfg.grid, cfg.patch_size, cfg.in_channels
        return x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(B, g * g, p * p * C)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P, p*p*C) -> (B, C, H, W), inverse of the row-major patch order."""
        cfg = self.config
        B, g, p, C = tokens.shape[0], cfg.grid, cfg.patch_size, cfg.in_channels
        x = tokens.reshape(B, g, g, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, C, g * p, g * p)

    def forward(self, x: torch.Tensor, t, return_attention: bool = False):
        cfg = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise PifsError(f"DiT expects input (B, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}), "
                            f"got {tuple(x.shape)}")
        c = self.t_embed(as_time_tensor(t, x.shape[0], x.device, x.dtype))
        h = self.patchify(x) + self.pos
        maps = []
        for blk in self.blocks:
            h, attn = blk(h, c)
            maps.append(attn)
        sh, sc = self.ada_out(c).chunk(2, dim=-1)
        out = self.unpatchify(self.out(modulate(self.norm_out(h), sh, sc)))
        if self.store_attention:
            self.attention_maps = [m.detach() for m in maps]
        return (out, maps) if return_attention else out
