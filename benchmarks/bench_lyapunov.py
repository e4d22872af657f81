"""Top-k Lyapunov (batched JVPs + thin QR) against textbook full-Jacobian Benettin (jacrev + d x d QR).

A d = 784 denoiser (a small random conv net on 28 x 28 x 1, x0 prediction, DDPM schedule),
one trajectory, N DDIM steps. Each method runs in its own subprocess so that peak memory is
measured separately (CPU: peak RSS growth over the process's state before the method; GPU:
torch.cuda.max_memory_allocated). Both start from the same random frame (the top-k method
gets its first k columns, without the Ritz rotation), so their top-k exponents must agree to
rounding: QR is nested (compared in frame order, i.e. before sorting).

    python benchmarks/bench_lyapunov.py [--k 32] [--steps 10] [--device cpu|cuda] [--threads 1] [--dtype both]
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


def _build(device: str, steps: int, dtype):
    import torch
    from torch import nn

    from pifskit import get_schedule, make_chain
    from pifskit.torch.adapter import ChainDenoiser, ModelDenoiser
    from pifskit.torch.testing import timestep_embedding

    class ConvDenoiser(nn.Module):
        def __init__(self, ch: int = 32):
            super().__init__()
            self.inp = nn.Conv2d(1, ch, 3, padding=1)
            self.t = nn.Linear(32, ch)
            self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU(),
                                      nn.Conv2d(ch, ch, 3, padding=1), nn.SiLU())
            self.out = nn.Conv2d(ch, 1, 3, padding=1)

        def forward(self, x, t):
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
            h = self.inp(x) + self.t(timestep_embedding(t, 32))[:, :, None, None]
            return self.out(self.body(h))

    torch.manual_seed(0)
    model = ConvDenoiser().to(device=device, dtype=dtype).eval()
    chain = make_chain(get_schedule("ddpm"), steps, "trailing")
    cd = ChainDenoiser(ModelDenoiser(model, "sample", "discrete"), chain)
    return cd, chain


def _rss_now_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def worker(method: str, k: int, steps: int, device: str, threads: int, dtype_name: str) -> dict:
    import torch

    from pifskit.torch.lyapunov import (
        lyapunov_full_jacobian,
        lyapunov_spectrum,
        random_frame,
    )

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    cd, chain = _build(device, steps, dtype)
    d = 784
    x = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    frame = random_frame(1, d, d, dtype, "cpu", torch.Generator().manual_seed(2)).to(device)
    # warm-up on one step with the same shapes (first-call allocation / kernel selection)
    if method == "topk":
        lyapunov_spectrum(cd.step, 1, x, k, method="benettin", frame=frame[..., :k].clone(), ritz=False)
    else:
        lyapunov_full_jacobian(cd.step, 1, x, frame=frame)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = _rss_now_kb()
    t0 = time.perf_counter()
    if method == "topk":
        res = lyapunov_spectrum(cd.step, chain.n_steps, x, k, method="benettin", frame=frame[..., :k].clone(), ritz=False)
    else:
        res = lyapunov_full_jacobian(cd.step, chain.n_steps, x, frame=frame)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if device == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0, 0) / 1024
    # frame order: the first k frame vectors' sums (QR is nested, so both methods give the same ones)
    return {"method": method, "seconds": dt, "peak_mb": peak_mb, "exponents": res.frame_order[0, :k].tolist(),
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="both", choices=("float32", "float64", "both"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.k, args.steps, args.device, args.threads, args.dtype)))
        return
    for dtype in (("float32", "float64") if args.dtype == "both" else (args.dtype,)):
        results = {}
        for method in ("topk", "full"):
            cmd = [sys.executable, __file__, "--worker", method, "--k", str(args.k), "--steps", str(args.steps),
                   "--device", args.device, "--threads", str(args.threads), "--dtype", dtype]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[method] = json.loads(out.strip().splitlines()[-1])
        tk, fu = results["topk"], results["full"]
        err = float(np.max(np.abs(np.array(tk["exponents"]) - np.array(fu["exponents"]))))
        d, k = 784, args.k
        print(f"device: {tk['device']}, d = {d}, k = {k}, {args.steps} DDIM steps, 1 trajectory, {dtype}, "
              f"{args.threads} thread(s)")
        print(f"{'method':<32}{'time [s]':>10}{'peak mem [MB]':>15}")
        print(f"{'top-k JVP + thin QR':<32}{tk['seconds']:>10.3f}{tk['peak_mb']:>15.1f}")
        print(f"{'full jacrev + d x d QR':<32}{fu['seconds']:>10.3f}{fu['peak_mb']:>15.1f}")
        print(f"speed-up: {fu['seconds'] / tk['seconds']:.1f}x   (d/k = {d / k:.1f})   memory ratio: "
              f"{fu['peak_mb'] / max(tk['peak_mb'], 1e-3):.1f}x")
        print(f"max |top-k exponent difference| = {err:.2e}")
        print(f"first exponents (frame order): {np.round(tk['exponents'][:5], 4).tolist()}\n")


if __name__ == "__main__":
    main()
