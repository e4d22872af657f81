"""Krylov top-k Lyapunov exponents against the full product Jacobian (jacrev) + exact SVD.

A small random conv denoiser (x0 prediction, DDPM schedule) on 28 x 28 x 1 (d = 784) and
32 x 32 x 3 (d = 3072), one trajectory, N DDIM steps. Reference: J = J_N ... J_1 with every J_i
by ``jacrev`` (d VJPs, chunked), multiplied out, then ``torch.linalg.svdvals`` -- the dense
method. Tested: ``lyapunov_spectrum`` (block Krylov, default tolerance of the dtype). Each method
runs in its own subprocess so that peak memory is measured separately (CPU: peak RSS growth over
the process's state before the method; GPU: torch.cuda.max_memory_allocated). Accuracy: max
|Krylov - dense| over the top k, beside the Krylov method's own largest bound.

    python benchmarks/bench_lyapunov.py [--k 32] [--steps 5] [--dims 784 3072] [--device cpu|cuda]
                                        [--threads 1] [--dtype both]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def _build(device: str, steps: int, dtype, channels: int):
    import torch
    from torch import nn

    from pifskit import get_schedule, make_chain
    from pifskit.torch.adapter import ChainDenoiser, ModelDenoiser
    from pifskit.torch.testing import timestep_embedding

    class ConvDenoiser(nn.Module):
        def __init__(self, ch: int = 32):
            super().__init__()
            self.inp = nn.Conv2d(channels, ch, 3, padding=1)
            self.t = nn.Linear(32, ch)
            self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(),
                                      nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU())
            self.out = nn.Conv2d(ch, channels, 3, padding=1)

        def forward(self, x, t):
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
            h = self.inp(x) + self.t(timestep_embedding(t, 32))[:, :, None, None]
            return self.out(self.body(h))

    torch.manual_seed(0)
    model = ConvDenoiser().to(device=device, dtype=dtype).eval()
    chain = make_chain(get_schedule("ddpm"), steps, "trailing")
    cd = ChainDenoiser(ModelDenoiser(model, "sample", "discrete"), chain)
    return cd, chain


SHAPES = {784: (1, 28, 28), 3072: (3, 32, 32)}


def _rss_now_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def dense_exponents(cd, n_steps: int, x, chunk: int):
    """log singular values of J_N ... J_1 (jacrev per step, chunked VJPs; exact SVD)."""
    import torch

    shape = tuple(x.shape)
    J = None
    for i in range(n_steps):
        def f(v, i=i):
            return cd.step(v.reshape(shape), i).reshape(-1)
        with torch.no_grad():
            Ji = torch.func.jacrev(f, chunk_size=chunk)(x.reshape(-1))
            J = Ji if J is None else Ji @ J
            x = cd.step(x, i)
    return torch.log(torch.linalg.svdvals(J)).double().cpu().numpy()


def worker(method: str, k: int, steps: int, device: str, threads: int, dtype_name: str, d: int) -> dict:
    import torch

    from pifskit.torch.lyapunov import lyapunov_spectrum

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    shape = SHAPES[d]
    cd, chain = _build(device, steps, dtype, shape[0])
    x = torch.randn((1,) + shape, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)

    def run(n):
        if method == "krylov":
            return lyapunov_spectrum(cd.step, n, x, k, generator=torch.Generator().manual_seed(2))
        return dense_exponents(cd, n, x, 256)

    run(1)  # warm-up (first-call allocation / kernel selection)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = _rss_now_kb()
    t0 = time.perf_counter()
    res = run(chain.n_steps)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if device == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0, 0) / 1024
    out = {"method": method, "seconds": dt, "peak_mb": peak_mb,
           "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
    if method == "krylov":
        out.update(exponents=res.exponents.tolist(), bound=float(res.error_bound.max()),
                   converged=res.converged, matvecs=res.meta["matvecs"])
    else:
        out["exponents"] = res[:k].tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--dims", type=int, nargs="+", default=[784, 3072], choices=sorted(SHAPES))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="both", choices=("float32", "float64", "both"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--d", type=int, default=784, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.k, args.steps, args.device, args.threads, args.dtype, args.d)))
        return
    k = args.k
    print(f"{'d':>5} {'dtype':>8} {'krylov s':>9} {'dense s':>9} {'speed-up':>9} {'d/2k':>6} {'krylov MB':>10} "
          f"{'dense MB':>9} {'max|diff|':>10} {'bound':>9} {'conv':>5} {'matvecs':>8}", flush=True)
    for d in args.dims:
        for dtype in (("float32", "float64") if args.dtype == "both" else (args.dtype,)):
            results = {}
            for method in ("krylov", "dense"):
                cmd = [sys.executable, __file__, "--worker", method, "--k", str(k), "--steps", str(args.steps),
                       "--device", args.device, "--threads", str(args.threads), "--dtype", dtype, "--d", str(d)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                results[method] = json.loads(out.strip().splitlines()[-1])
            kr, de = results["krylov"], results["dense"]
            err = float(np.max(np.abs(np.array(kr["exponents"]) - np.array(de["exponents"]))))
            print(f"{d:>5} {dtype:>8} {kr['seconds']:>9.2f} {de['seconds']:>9.2f} "
                  f"{de['seconds'] / kr['seconds']:>8.1f}x {d / (2 * k):>6.1f} {kr['peak_mb']:>10.1f} "
                  f"{de['peak_mb']:>9.1f} {err:>10.1e} {kr['bound']:>9.1e} {str(kr['converged']):>5} "
                  f"{kr['matvecs']:>8}", flush=True)
    print(f"device: {kr['device']}, k = {k}, {args.steps} DDIM steps, 1 trajectory, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
