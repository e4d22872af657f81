"""Independent reference for the Krylov tests: the explicit product of per-step ``jacrev`` Jacobians and
numpy's SVD (finite-time exponents = log singular values of J_N ... J_1)."""

from __future__ import annotations

import numpy as np
import torch


def dense_log_singular_values(step, n_steps: int, x: torch.Tensor, k: int) -> np.ndarray:
    """Top-k log singular values of the product Jacobian of ``x -> step(x, i)`` over ``n_steps`` steps."""
    shape, d = x.shape, x.numel()
    J = np.eye(d)
    for i in range(n_steps):
        Ji = torch.func.jacrev(lambda v: step(v.reshape(shape), i).reshape(-1))(x.reshape(-1))
        J = Ji.detach().numpy() @ J
        x = step(x, i).detach()
    return np.log(np.linalg.svd(J, compute_uv=False))[:k]
