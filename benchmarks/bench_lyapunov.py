"""Krylov top-k Lyapunov exponents against the full product Jacobian (jacrev) + exact SVD.

Maps (one trajectory, DDIM chain, x0 = seeded Gaussian noise):

* ``random``: a random 4-layer conv denoiser (x0 prediction, 32 channels, DDPM schedule) --
  slowly decaying singular values, the hard case for any Krylov method;
* ``trained``: a tiny pifskit U-Net (base 16 channels, levels (1, 2), epsilon prediction, DDPM)
  trained here for ``--train-steps`` Adam steps on sklearn's 8x8 digits upsampled to 28x28
  (d = 784), or to 32x32 with a random colour per image (d = 3072) -- a realistic denoiser,
  whose product Jacobian has a fast-decaying spectrum.

Methods: ``krylov`` = ``lyapunov_spectrum`` (block Krylov SVD) at a stated tolerance, default
1e-3 in float32 and 1e-4 in float64 (the issue's accuracy targets, relative to max(1, |Lambda|));
``dense`` = J = J_N ... J_1 with every J_i by ``jacrev`` (d VJPs, chunks of 256), multiplied
out, ``torch.linalg.svdvals``. "Equal accuracy" is made explicit: both methods' top-k in both
dtypes are compared with the float64 dense result of the same map (the reference; its own error
is rounding, ~1e-12), and the table prints each achieved error beside its time. Each run is its
own subprocess (peak RSS growth; GPU: max_memory_allocated), after a warm-up call.

Cost model (the lower bound): per chain step a Krylov method needs at least k JVPs + k VJPs (one
block, no oversampling, one pass: the image M V and the certificate M^T M V), the dense method d
VJPs plus d^3 flops for the product, so d/(2k) is the one-pass ceiling of the speed-up. The
achieved one is ~ d / products (products = JVP + VJP chains used, reported), i.e. d/(2k) divided
by (k + p)/k (oversampling) and by the number of blocks the spectrum's decay requires.

    python benchmarks/bench_lyapunov.py [--k 8 32] [--dims 784 3072] [--maps random trained]
        [--dtype both] [--steps-random 3] [--steps-trained 10] [--train-steps 150] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SHAPES = {784: (1, 28, 28), 3072: (3, 32, 32)}
TOL = {"float32": 1e-3, "float64": 1e-4}


def _conv_denoiser(channels: int, dtype, device):
    import torch
    from torch import nn

    from pifskit.torch.models import timestep_embedding

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
            h = self.inp(x) + self.t(timestep_embedding(t, 32, dtype=x.dtype))[:, :, None, None]
            return self.out(self.body(h))

    torch.manual_seed(0)
    return ConvDenoiser().to(device=device, dtype=dtype).eval()


def _unet(shape):
    from pifskit.torch.models import build_model, default_config

    return build_model(default_config("unet", shape, base_channels=16, groups=4, channel_mult=[1, 2]))


def digits(shape, seed: int = 0) -> np.ndarray:
    """sklearn's 1797 8x8 digits, bilinear-upsampled to shape (C, H, W) in [-1, 1] (C = 3: random colours)."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    C, H, W = shape
    x = torch.from_numpy(load_digits().images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False).clamp(0, 1)
    if C > 1:
        col = torch.from_numpy(np.random.default_rng(seed).uniform(0.3, 1.0, (x.shape[0], C, 1, 1)).astype(np.float32))
        x = x * col
    return (2 * x - 1).numpy()


def train_unet(shape, steps: int, path: str, batch: int = 32, lr: float = 2e-3) -> float:
    """Epsilon-prediction DDPM training of the tiny U-Net on upsampled digits; returns the last loss."""
    import torch

    from pifskit import get_schedule
    from pifskit.torch.models import training_target

    torch.manual_seed(0)
    data = torch.from_numpy(digits(shape))
    model = _unet(shape)
    ab = torch.from_numpy(get_schedule("ddpm").alphas_cumprod).float()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        x0 = data[torch.randint(0, data.shape[0], (batch,), generator=g)]
        t = torch.randint(0, ab.numel(), (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a, s = ab[t].sqrt(), (1 - ab[t]).sqrt()
        xt = a.view(-1, 1, 1, 1) * x0 + s.view(-1, 1, 1, 1) * eps
        loss = (model(xt, t) - training_target("epsilon", x0, eps, a, s)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    torch.save(model.state_dict(), path)
    return float(np.mean(losses[-20:]))


def build(map_name: str, d: int, dtype, device: str, steps: int, weights: str | None):
    from pifskit import get_schedule, make_chain
    from pifskit.torch.adapter import ChainDenoiser, ModelDenoiser

    import torch

    shape = SHAPES[d]
    if map_name == "random":
        model, pred = _conv_denoiser(shape[0], dtype, device), "sample"
    else:
        model, pred = _unet(shape), "epsilon"
        model.load_state_dict(torch.load(weights))
        model = model.to(device=device, dtype=dtype).eval()
    chain = make_chain(get_schedule("ddpm"), steps, "trailing")
    return ChainDenoiser(ModelDenoiser(model, pred, "discrete"), chain), chain


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


def worker(a) -> dict:
    import torch

    from pifskit.torch.lyapunov import lyapunov_spectrum

    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    k = max(a.k)  # krylov: one k per worker; dense: the top max(k) of the full spectrum
    cd, chain = build(a.map, a.d, dtype, a.device, a.steps, a.weights)
    x = torch.randn((1,) + SHAPES[a.d], generator=torch.Generator().manual_seed(1)).to(device=a.device, dtype=dtype)

    def run(n):
        if a.worker == "krylov":
            return lyapunov_spectrum(cd.step, n, x, k, tol=a.tol, oversample=a.oversample,
                                     generator=torch.Generator().manual_seed(2))
        return dense_exponents(cd, n, x, 256)

    # warm-up: the first call of the torch.func transforms costs seconds (both methods use vmapped VJPs)
    lyapunov_spectrum(cd.step, 1, x, 2, oversample=0, max_matvecs=4)
    if a.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss0 = _rss_now_kb()
    t0 = time.perf_counter()
    res = run(chain.n_steps)
    if a.device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if a.device == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0, 0) / 1024
    out = {"method": a.worker, "seconds": dt, "peak_mb": peak_mb,
           "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu"}
    if a.worker == "krylov":
        out.update(exponents=res.exponents.tolist(), bound=res.error_bound.tolist(), converged=res.converged,
                   matvecs=res.meta["matvecs"], basis=res.meta["basis_size"], block=res.meta["block"])
    else:
        out["exponents"] = res[:k].tolist()
    return out


def _spawn(args, **kw) -> dict:
    cmd = [sys.executable, __file__, "--device", args.device, "--threads", str(args.threads)]
    for key, val in kw.items():
        if val is not None:
            cmd += [f"--{key.replace('_', '-')}"] + ([str(v) for v in val] if isinstance(val, list) else [str(val)])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rel_err(ex, ref) -> float:
    ex, ref = np.asarray(ex), np.asarray(ref)
    return float(np.max(np.abs(ex - ref) / np.maximum(1.0, np.abs(ref))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=[32])
    ap.add_argument("--dims", type=int, nargs="+", default=[784, 3072], choices=sorted(SHAPES))
    ap.add_argument("--maps", nargs="+", default=["random", "trained"], choices=("random", "trained"))
    ap.add_argument("--steps-random", type=int, default=3)
    ap.add_argument("--steps-trained", type=int, default=10)
    ap.add_argument("--train-steps", type=int, default=150)
    ap.add_argument("--oversample", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="both", choices=("float32", "float64", "both"))
    # worker-only
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--map", default="random", help=argparse.SUPPRESS)
    ap.add_argument("--d", type=int, default=784, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--tol", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        if args.dtype == "both":
            args.dtype = "float32"
        print(json.dumps(worker(args)))
        return
    ks = sorted(set(args.k))
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    hdr = (f"{'map':>8} {'N':>3} {'d':>5} {'k':>3} {'dtype':>8} {'tol':>6} {'krylov s':>9} {'dense s':>8} "
           f"{'ratio':>6} {'d/2k':>5} {'d/prod':>6} {'prod':>5} {'basis':>5} {'err krylov':>10} {'bound':>8} "
           f"{'err dense':>9} {'MB kry/den':>11} conv")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for map_name in args.maps:
            steps = args.steps_random if map_name == "random" else args.steps_trained
            for d in args.dims:
                weights = None
                if map_name == "trained":
                    weights = os.path.join(tmp, f"unet{d}.pt")
                    t0 = time.perf_counter()
                    loss = train_unet(SHAPES[d], args.train_steps, weights)
                    print(f"trained U-Net d = {d}: {args.train_steps} steps, final loss {loss:.3f} "
                          f"({time.perf_counter() - t0:.0f} s)", flush=True)
                res = {}
                common = dict(map=map_name, d=d, steps=steps, weights=weights)
                for dtype in ("float64",) + tuple(t for t in dtypes if t != "float64"):
                    res["dense", dtype] = _spawn(args, worker="dense", dtype=dtype, k=ks, **common)
                    if dtype in dtypes:
                        for k in ks:
                            res["krylov", dtype, k] = _spawn(args, worker="krylov", dtype=dtype, k=k, tol=TOL[dtype],
                                                             oversample=args.oversample, **common)
                for dtype in dtypes:
                    for k in ks:
                        ref = np.array(res["dense", "float64"]["exponents"][:k])
                        kr, de = res["krylov", dtype, k], res["dense", dtype]
                        row = dict(map=map_name, N=steps, d=d, k=k, dtype=dtype, tol=TOL[dtype],
                                   krylov_s=kr["seconds"], dense_s=de["seconds"], ratio=de["seconds"] / kr["seconds"],
                                   ceiling=d / (2 * k), model_ratio=d / kr["matvecs"], products=kr["matvecs"],
                                   basis=kr["basis"], err_krylov=_rel_err(kr["exponents"], ref),
                                   bound=float(np.max(kr["bound"])), err_dense=_rel_err(de["exponents"][:k], ref),
                                   mb_krylov=kr["peak_mb"], mb_dense=de["peak_mb"], converged=kr["converged"],
                                   bound_ok=bool(np.all(np.abs(np.array(kr["exponents"]) - ref)
                                                        <= np.array(kr["bound"]) + 1e-6 * np.maximum(1, np.abs(ref)))))
                        rows.append(row)
                        if len(rows) == 1:
                            print(hdr, flush=True)
                        print(f"{map_name:>8} {steps:>3} {d:>5} {k:>3} {dtype:>8} {row['tol']:>6.0e} "
                              f"{row['krylov_s']:>9.2f} {row['dense_s']:>8.2f} {row['ratio']:>5.1f}x "
                              f"{row['ceiling']:>5.1f} {row['model_ratio']:>6.1f} {row['products']:>5} {row['basis']:>5} "
                              f"{row['err_krylov']:>10.1e} {row['bound']:>8.1e} {row['err_dense']:>9.1e} "
                              f"{row['mb_krylov']:>5.0f}/{row['mb_dense']:<5.0f} {row['converged']}"
                              f"{'' if row['bound_ok'] else ' (bound violated)'}", flush=True)
    print(f"device: {res['dense', dtypes[0]]['device']}, {args.threads} thread(s); ratio = dense s / krylov s; "
          "d/prod = the cost-model ratio (d VJP chains against the Krylov method's JVP + VJP chains); errors: "
          "max |Lambda - Lambda_ref| / max(1, |Lambda_ref|) over the top k against float64 dense; "
          "bound: the Krylov method's largest reported absolute bound")


if __name__ == "__main__":
    main()
