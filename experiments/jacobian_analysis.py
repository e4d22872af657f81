"""Per-step measurements of a trained MNIST denoiser along DDIM chains (theory sections 2 and 4):

  * exact block Jacobian of D_t (full 784 x 784 Jacobian with torch.func, float32) at --points visited
    states per step: L_B(D_t) = max_i sum_j ||J_ij||_2 (spectral), its Frobenius version, and the
    off-diagonal block mass M_off = 1 - sum_i ||J_ii||_F^2 / ||J||_F^2 (p x p patches, p = --patch);
  * for a DiT: attention entropy (nats, per query row, mean over heads / layers / queries / trajectories; also
    divided by log P) and the cross-patch attention mass 1 - A_ii (weight a query patch puts on OTHER
    patches) along --trajectories sampled paths;
  * beside them the chain's L*_t, the Gaussian-optimal L_B of the stationary (Fourier) MNIST model and the
    surrogate M_off(t) (pifskit.blockmass.offdiag_block_mass) on the same patches.

    python experiments/jacobian_analysis.py --checkpoint runs/exp/dit --steps 20 --out runs/exp/jac_dit.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="the run's data spec, e.g. mnist:DIR (the MNIST IDX folder)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--trajectories", type=int, default=16)
    p.add_argument("--points", type=int, default=2)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from _common import load_chain_denoiser, load_split

    from pifskit.blockmass import offdiag_block_mass
    from pifskit.geometry import contraction_threshold
    from pifskit.spectra import from_images_fourier
    from pifskit.torch.blocks import Partition, block_norms, gaussian_block_row_sums

    model, info, chain, cd = load_chain_denoiser(a.checkpoint, a.steps)
    shape = info["sample_shape"]
    part = Partition.patches(shape, a.patch)
    train, _ = load_split(a.data)
    spec = from_images_fourier(train.images)
    levels = chain.logsnr[:-1]
    is_dit = info["arch"] == "dit"

    g = torch.Generator().manual_seed(a.seed)
    x = torch.randn((a.trajectories,) + tuple(shape), generator=g)
    N = chain.n_steps
    rows = []
    t0 = time.perf_counter()
    for i in range(N):
        rec = {"step": i, "logsnr": float(levels[i])}
        if is_dit:
            ts = torch.full((x.shape[0],), float(chain.timesteps[i]))
            with torch.no_grad():
                _, maps = model(x, ts, return_attention=True)
            A = torch.stack(maps).double()  # (L, B, H, P, P)
            P = A.shape[-1]
            ent = -(A * torch.log(A.clamp_min(1e-300))).sum(-1)  # (L, B, H, P)
            diag = torch.diagonal(A, dim1=-2, dim2=-1)
            rec.update(attn_entropy=float(ent.mean()), attn_entropy_norm=float(ent.mean() / np.log(P)),
                       attn_cross_mass=float((1 - diag).mean()),
                       attn_cross_mass_per_layer=(1 - diag).mean(dim=(1, 2, 3)).tolist(),
                       attn_entropy_per_layer=(ent.mean(dim=(1, 2, 3)) / np.log(P)).tolist())
        lbs, lbf, mo = [], [], []
        for m in range(a.points):
            bn = block_norms(lambda v, i=i: cd.denoise(v, i), x[m].detach(), part, mode="reverse")
            lbs.append(bn.block_max)
            lbf.append(bn.block_max_frob)
            mo.append(bn.offdiag_mass)
        rec.update(LB=float(np.mean(lbs)), LB_all=[float(v) for v in lbs], LB_frob=float(np.mean(lbf)),
                   Moff_jac=float(np.mean(mo)), Moff_jac_all=[float(v) for v in mo])
        with torch.no_grad():
            x = cd.step(x, i)
        rows.append(rec)
        print(f"step {i} logsnr {levels[i]:.2f} " + " ".join(f"{k}={v:.4g}" for k, v in rec.items()
                                                             if isinstance(v, float)), flush=True)
    lstar = contraction_threshold(chain)
    res = {
        "checkpoint": str(a.checkpoint), "arch": info["arch"], "train_step": info["step"], "patch": a.patch,
        "chain": chain.to_dict(), "steps": N, "trajectories": a.trajectories, "points": a.points,
        "jacobian": "exact full Jacobian (torch.func.jacrev), float32",
        "rows": rows, "lstar": lstar.tolist(),
        "gaussian_LB": gaussian_block_row_sums(levels, spec.power_grid, a.patch, "spectral").tolist(),
        "gaussian_LB_frob": gaussian_block_row_sums(levels, spec.power_grid, a.patch, "fro").tolist(),
        "surrogate_Moff": offdiag_block_mass(levels, spec.power_grid, a.patch).tolist(),
        "seconds": time.perf_counter() - t0,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out} ({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
