"""A small DDPM-style U-Net: ResBlocks with a time embedding, down / up paths with skips; attention-free unless
``attention=True`` (one self-attention block at the lowest resolution)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..._validate import PifsError, check_positive_int
from ...parameterization import normalize_prediction
from .common import PREDICTIONS, TimestepEmbedder, as_time_tensor


@dataclass
class UNetConfig:
    """Size and parameterisation of a :class:`UNet`; resolution divides by 2 between levels."""

    image_size: int = 28
    in_channels: int = 1
    base_channels: int = 24
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    groups: int = 8
    attention: bool = False
    prediction: str = "epsilon"
    arch: str = "unet"

    def __post_init__(self):
        for k in ("image_size", "in_channels", "base_channels", "num_res_blocks", "groups"):
            check_positive_int(getattr(self, k), k)
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise PifsError(f"channel_mult must be a non-empty list of positive ints, got {self.channel_mult}")
        div = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % div:
            raise PifsError(f"image_size {self.image_size} must be divisible by {div} "
                            f"({len(self.channel_mult)} levels)")
        for m in self.channel_mult:
            if (self.base_channels * m) % self.groups:
                raise PifsError(f"channels {self.base_channels * m} not divisible by groups {self.groups}")
        self.prediction = normalize_prediction(self.prediction, PREDICTIONS)
        if self.arch != "unet":
            raise PifsError(f"UNetConfig has arch 'unet', got {self.arch!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d


class ResBlock(nn.Module):
    """h = conv(SiLU(GN(x))) + Linear(temb); h = conv(SiLU(GN(h))) (zero-init); return skip(x) + h."""

    def __init__(self, cin: int, cout: int, tdim: int, groups: int):
        super().__init__()
        self.n1 = nn.GroupNorm(groups, cin)
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.t = nn.Linear(tdim, cout)
        self.n2 = nn.GroupNorm(groups, cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.c2.weight)
        nn.init.zeros_(self.c2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x))) + self.t(temb)[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    """Single-head self-attention over pixels of a feature map, residual."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        attn = torch.softmax(q.transpose(1, 2) @ k * C ** -0.5, dim=-1)
        return x + self.proj((v @ attn.transpose(1, 2)).reshape(B, C, H, W))


class UNet(nn.Module):
    """``model(x, t)`` -> prediction with x's shape."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        cfg = config
        ch = [cfg.base_channels * m for m in cfg.channel_mult]
        tdim = 4 * cfg.base_channels
        self.t_embed = TimestepEmbedder(tdim)
        self.inp = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [ch[0]]
        cur = ch[0]
        for lvl, c in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cur, c, tdim, cfg.groups))
                cur = c
                skips.append(cur)
            self.down.append(blocks)
            if lvl < len(ch) - 1:
                self.downsample.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
                skips.append(cur)
        self.mid1 = ResBlock(cur, cur, tdim, cfg.groups)
        self.mid_attn = SelfAttention2d(cur, cfg.groups) if cfg.attention else nn.Identity()
        self.mid2 = ResBlock(cur, cur, tdim, cfg.groups)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for lvl in reversed(range(len(ch))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(cur + skips.pop(), ch[lvl], tdim, cfg.groups))
                cur = ch[lvl]
            self.up.append(blocks)
            if lvl > 0:
                self.upsample.append(nn.Conv2d(cur, cur, 3, padding=1))
        self.out_norm = nn.GroupNorm(cfg.groups, cur)
        self.out = nn.Conv2d(cur, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        cfg = self.config
        if x.dim() != 4 or tuple(x.shape[1:]) != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise PifsError(f"UNet expects input (B, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}), "
                            f"got {tuple(x.shape)}")
        temb = self.t_embed(as_time_tensor(t, x.shape[0], x.device, x.dtype))
        h = self.inp(x)
        hs = [h]
        for lvl, blocks in enumerate(self.down):
            for blk in blocks:
                h = blk(h, temb)
                hs.append(h)
            if lvl < len(self.downsample):
                h = self.downsample[lvl](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, temb)), temb)
        for k, blocks in enumerate(self.up):
            for blk in blocks:
                h = blk(torch.cat([h, hs.pop()], dim=1), temb)
            if k < len(self.upsample):
                h = self.upsample[k](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))
