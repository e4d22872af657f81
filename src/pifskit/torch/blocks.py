"""Block Jacobian analysis of a denoiser for a patch (or token) partition (theory sections 2 and 4).

For P blocks of the d coordinates, J_ij = dD_i/dx_j; L_B = max_i sum_j ||J_ij||_2,
M_off = sum_{i != j} ||J_ij||_F^2 / sum_ij ||J_ij||_F^2. Exact (full Jacobian) for small d; otherwise a
Gaussian probe z_j on block j gives E ||(J z_j)_i||^2 = ||J_ij||_F^2 (variance 2 ||J_ij^T J_ij||_F^2).
Estimator bias and variance: docs/torch.md#block-jacobians.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import jacfwd, jacrev, jvp, vmap

from .._validate import PifsError, check_choice, check_positive_int
from ..blockmass import block_mass


@dataclass(frozen=True)
class Partition:
    """A partition of the flattened sample coordinates into P equal blocks: ``index`` is (P, b)."""

    index: torch.Tensor
    sample_shape: tuple[int, ...]
    kind: str = "patches"
    patch: int | None = None

    @property
    def n_blocks(self) -> int:
        return int(self.index.shape[0])

    @property
    def block_size(self) -> int:
        return int(self.index.shape[1])

    @property
    def d(self) -> int:
        return int(np.prod(self.sample_shape))

    @classmethod
    def patches(cls, sample_shape: tuple[int, ...], patch: int) -> Partition:
        """p x p spatial patches of a C x H x W image (all channels in the patch), row-major patch order."""
        if len(sample_shape) == 2:
            sample_shape = (1,) + tuple(sample_shape)
        if len(sample_shape) != 3:
            raise PifsError(f"patch partition needs a C x H x W sample shape, got {tuple(sample_shape)}")
        C, H, W = (int(v) for v in sample_shape)
        p = check_positive_int(patch, "patch")
        if H % p or W % p:
            raise PifsError(f"patch size {p} does not tile a {H}x{W} image (H and W must be multiples of p)")
        ids = np.arange(C * H * W).reshape(C, H // p, p, W // p, p)
        index = ids.transpose(1, 3, 0, 2, 4).reshape((H // p) * (W // p), C * p * p)
        return cls(torch.as_tensor(index), (C, H, W), "patches", p)

    @classmethod
    def tokens(cls, sample_shape: tuple[int, int]) -> Partition:
        """Each token of a T x D sample is one block."""
        if len(sample_shape) != 2:
            raise PifsError(f"token partition needs a T x D sample shape, got {tuple(sample_shape)}")
        T, D = (int(v) for v in sample_shape)
        return cls(torch.arange(T * D).reshape(T, D), (T, D), "tokens", None)

    def check(self, x: torch.Tensor, batched: bool = True) -> None:
        shape = tuple(x.shape[1:]) if batched else tuple(x.shape)
        if int(np.prod(shape)) != self.d:
            raise PifsError(f"partition covers {self.d} coordinates ({self.sample_shape}), sample has shape {shape}")

    def blockify(self, v: torch.Tensor) -> torch.Tensor:
        """(..., d) -> (..., P, b)."""
        return v[..., self.index]


@dataclass
class BlockNorms:
    """Exact block norms at one input: spectral (P x P), Frobenius (P x P) and summaries."""

    spectral: np.ndarray
    frobenius: np.ndarray

    @property
    def row_sums(self) -> np.ndarray:
        """sum_j ||J_ij||_2 for each output block i."""
        return self.spectral.sum(axis=1)

    @property
    def frob_row_sums(self) -> np.ndarray:
        """sum_j ||J_ij||_F (the quantity the probe estimator targets)."""
        return self.frobenius.sum(axis=1)

    @property
    def block_max(self) -> float:
        """L_B = max_i sum_j ||J_ij||_2."""
        return float(self.row_sums.max())

    @property
    def block_max_frob(self) -> float:
        return float(self.frob_row_sums.max())

    @property
    def offdiag_mass(self) -> float:
        """M_off = 1 - sum_i ||J_ii||_F^2 / sum_ij ||J_ij||_F^2 (pifskit.blockmass.block_mass)."""
        return block_mass(self.frobenius**2)


def full_jacobian(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str = "forward",
                  chunk_size: int | None = None) -> torch.Tensor:
    """The d x d Jacobian of a batched map at one sample x (no batch dim): ``mode`` 'forward' (jacfwd, d JVPs)
    or 'reverse' (jacrev, d VJPs), vmapped in chunks."""
    check_choice(mode, "jacobian mode", ("forward", "reverse"))

    def f(v: torch.Tensor) -> torch.Tensor:  # one flat sample (d,) -> (d,)
        return fn(v.reshape((1,) + tuple(x.shape))).reshape(-1)

    flat = x.reshape(-1).detach()
    with torch.no_grad():
        out = f(flat)
    if out.shape != flat.shape:
        raise PifsError(f"denoiser maps {tuple(flat.shape)} to {tuple(out.shape)}; block analysis needs d -> d")
    if mode == "reverse":
        return jacrev(f, chunk_size=chunk_size)(flat).detach()
    if chunk_size is None:
        return jacfwd(f)(flat).detach()
    eye = torch.eye(flat.numel(), dtype=flat.dtype, device=flat.device)
    cols = vmap(lambda t: jvp(f, (flat,), (t,))[1], chunk_size=chunk_size)(eye)  # (d, d): row j = J e_j
    return cols.T.detach()


def block_norms_from_jacobian(J: torch.Tensor, partition: Partition) -> BlockNorms:
    """Spectral and Frobenius norms of the P x P blocks of a d x d matrix."""
    if J.shape != (partition.d, partition.d):
        raise PifsError(f"Jacobian is {tuple(J.shape)}, the partition needs {partition.d} x {partition.d}")
    idx = partition.index
    blocks = J[idx[:, None, :, None], idx[None, :, None, :]]  # (P, P, b, b)
    spec = torch.linalg.matrix_norm(blocks, ord=2)
    frob = torch.linalg.matrix_norm(blocks, ord="fro")
    return BlockNorms(spec.double().cpu().numpy(), frob.double().cpu().numpy())


def block_norms(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, partition: Partition,
                mode: str = "forward", chunk_size: int | None = None) -> BlockNorms:
    """Exact block norms of dfn/dx at one sample x (no batch dim); fn is batched (B, *shape) -> (B, *shape)."""
    partition.check(x, batched=False)
    return block_norms_from_jacobian(full_jacobian(fn, x, mode, chunk_size), partition)


def _probe_tangents(x: torch.Tensor, partition: Partition, columns: torch.Tensor, n_probes: int,
                    generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian probes supported on input blocks: shape (m * n, B, d) for columns (B, m) of block ids."""
    B, m, b = x.shape[0], columns.shape[1], partition.block_size
    z = torch.randn((m, n_probes, B, b), generator=generator, dtype=x.dtype, device=x.device)
    tang = torch.zeros((m, n_probes, B, partition.d), dtype=x.dtype, device=x.device)
    pos = partition.index.to(x.device)[columns.T]  # (m, B, b)
    tang.scatter_(3, pos[:, None].expand(m, n_probes, B, b), z)
    return tang.reshape(m * n_probes, B, partition.d)


def probe_block_frob2(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, partition: Partition,
                      columns: torch.Tensor, n_probes: int = 1, generator: torch.Generator | None = None,
                      chunk_size: int | None = None, create_graph: bool = False, method: str = "auto"
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unbiased estimates est (B, P, m) of ||J_ij||_F^2 = E ||(J z_j)_i||^2 (variance 2 ||J_ij^T J_ij||_F^2 / n)
    for every output block i and the probed input blocks ``columns`` ((B, m) ids, or (m,) shared), and var, the
    sample variance of the mean over ``n_probes`` (None for one probe). ``method``: 'jvp' (vmapped
    ``torch.func.jvp``), 'double_backward' (J z = d/dw <J^T w, z> on the batch folded m n times: ``fn`` must act
    per sample) or 'auto' (double backward when ``create_graph``, which keeps the graph to the parameters)."""
    partition.check(x)
    n = check_positive_int(n_probes, "n_probes")
    B = x.shape[0]
    columns = torch.as_tensor(columns, dtype=torch.long, device=x.device)
    if columns.dim() == 1:
        columns = columns[None].expand(B, -1)
    if columns.shape[0] != B or ((columns < 0) | (columns >= partition.n_blocks)).any():
        raise PifsError(f"columns must be (B, m) block ids in [0, {partition.n_blocks - 1}]")
    m = columns.shape[1]
    shape = tuple(x.shape[1:])
    tang = _probe_tangents(x, partition, columns, n, generator)
    method = check_choice(method, "JVP method", ("auto", "jvp", "double_backward"))
    if method == "auto":
        method = "double_backward" if create_graph else "jvp"
    x_flat = x.reshape(B, -1).contiguous()
    x_flat = x_flat if create_graph else x_flat.detach()

    def f(v):
        return fn(v.reshape((v.shape[0],) + shape)).reshape(v.shape[0], -1)

    if method == "jvp":
        with torch.enable_grad() if create_graph else torch.no_grad():
            u = vmap(lambda t: jvp(f, (x_flat,), (t,))[1], chunk_size=chunk_size)(tang)  # (m * n, B, d)
    else:
        # J z by double backward on the folded batch (m n B samples): g = J^T w, then dg/dw . z = J z
        with torch.enable_grad():
            xr = x_flat.repeat(m * n, 1).detach().requires_grad_(True)
            y = f(xr)
            if y.shape != xr.shape:
                raise PifsError(f"model maps {tuple(xr.shape)} to {tuple(y.shape)}; block analysis needs d -> d")
            w = torch.zeros_like(y, requires_grad=True)
            (g,) = torch.autograd.grad(y, xr, w, create_graph=True)
            (u,) = torch.autograd.grad(g, w, tang.reshape(m * n * B, -1), create_graph=create_graph)
        u = u.reshape(m * n, B, -1)
    sq = partition.blockify(u).pow(2).sum(-1)  # (m * n, B, P)
    sq = sq.reshape(m, n, B, partition.n_blocks).permute(2, 3, 0, 1)  # (B, P, m, n)
    est = sq.mean(-1)
    var = sq.detach().var(-1, unbiased=True) / n if n > 1 else None
    if not create_graph:
        est = est.detach()
    return est, var


def estimate_block_row_sums(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, partition: Partition,
                            n_blocks: int | None = None, n_probes: int = 1, generator: torch.Generator | None = None,
                            chunk_size: int | None = None, create_graph: bool = False,
                            eps: float = 1e-12, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """rho_i ~= sum_j ||J_ij||_F from m = ``n_blocks`` probed input blocks: (rho, se), rho (B, P) =
    (P / m) sum_{j in S} sqrt(est_ij), se_i = P sqrt((1 - m/P) s_i^2 / m) the subset-sampling standard error
    (s_i^2 the variance of the m terms; 0 when m = P)."""
    B, P = x.shape[0], partition.n_blocks
    m = P if n_blocks is None else check_positive_int(n_blocks, "n_blocks", maximum=P)
    if m == P:
        cols = torch.arange(P, device=x.device)[None].expand(B, -1)
    else:
        cols = torch.rand((B, P), generator=generator, device=x.device).argsort(dim=1)[:, :m]  # without replacement
    est, _ = probe_block_frob2(fn, x, partition, cols, n_probes, generator, chunk_size, create_graph, method)
    terms = (est + eps).sqrt()  # (B, P, m)
    rho = terms.sum(-1) * (P / m)
    if m > 1 and m < P:
        se = P * torch.sqrt((1 - m / P) * terms.detach().var(-1, unbiased=True) / m)
    else:
        se = torch.zeros_like(rho.detach())
    return rho, se


def estimate_block_frob2_matrix(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, partition: Partition,
                                n_probes: int = 4, generator: torch.Generator | None = None,
                                chunk_size: int | None = None) -> torch.Tensor:
    """Unbiased estimate of the full P x P matrix of ||J_ij||_F^2 for each sample: (B, P, P), P * n JVPs."""
    cols = torch.arange(partition.n_blocks, device=x.device)
    return probe_block_frob2(fn, x, partition, cols, n_probes, generator, chunk_size)[0]


def gaussian_block_row_sums(logsnr, power_grid, patch: int, norm: str = "spectral", channels: int = 1) -> np.ndarray:
    """L_B = max_i sum_j ||J_ij|| of the Gaussian-optimal denoiser of a stationary model, per level (``norm``
    'spectral' or 'fro'): the convolution with h_t = ifft2(a lam / (a^2 lam + s^2)), so J_ij = I_C (x) K_ij,
    ||J_ij||_2 = ||K_ij||_2, ||J_ij||_F = sqrt(``channels``) ||K_ij||_F; every block row has row 0's sum."""
    check_choice(norm, "norm", ("spectral", "fro"))
    l = np.atleast_1d(np.asarray(logsnr, dtype=np.float64))
    grid = np.asarray(power_grid, dtype=np.float64)
    if grid.ndim != 2:
        raise PifsError("power_grid must be H x W")
    H, W = grid.shape
    p = check_positive_int(patch, "patch")
    if H % p or W % p:
        raise PifsError(f"patch size {p} does not tile a {H}x{W} image")
    a2 = 1.0 / (1.0 + np.exp(-l))[:, None, None]
    s2 = 1.0 / (1.0 + np.exp(l))[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        gain = np.sqrt(a2) * grid[None] / (a2 * grid[None] + s2)
    gain = np.where(np.isfinite(gain), gain, 1.0)
    h = np.fft.ifft2(gain).real  # (L, H, W): D(x)[r] = sum_r' h[r - r'] x[r']
    r = np.arange(p)
    py = np.arange(H // p) * p
    px = np.arange(W // p) * p
    # rows: patch 0 pixel (ry, rx); columns: patch (Py, Px) pixel (cy + Py, cx + Px)
    dy = (r[:, None, None] - r[None, None, :] - py[None, :, None]) % H  # (ry, Py, cy)
    dx = (r[:, None, None] - r[None, None, :] - px[None, :, None]) % W  # (rx, Px, cx)
    K = h[:, dy[:, :, :, None, None, None], dx[None, None, None, :, :, :]]  # (L, ry, Py, cy, rx, Px, cx)
    K = K.transpose(0, 2, 5, 1, 4, 3, 6).reshape(l.size, (H // p) * (W // p), p * p, p * p)
    if norm == "spectral":
        nb = np.linalg.norm(K, ord=2, axis=(-2, -1))
    else:
        nb = np.sqrt(check_positive_int(channels, "channels") * (K**2).sum(axis=(-2, -1)))
    return nb.sum(axis=1)
