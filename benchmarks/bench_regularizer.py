"""PIFS regulariser overhead: training-step time with the regulariser (default probe budget) vs the plain step.

Model: the tiny attention denoiser of ``pifskit.torch.testing`` at 28 x 28 x 1 (patch 4, 49 tokens,
width 64, depth 2), epsilon prediction, DDPM schedule, batch 32, Adam. The regulariser probes
``n_blocks`` input blocks with ``n_probes`` probes on ``sample_fraction`` of the batch, at random
steps of a 10-step trailing chain. Steps are interleaved (plain, regularised, plain, ...) so
that CPU frequency / load drift affects both alike; medians are reported.

    python benchmarks/bench_regularizer.py [--iters 20] [--batch 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from pifskit import get_schedule, make_chain
from pifskit.torch.adapter import ChainDenoiser, ModelDenoiser
from pifskit.torch.blocks import Partition
from pifskit.torch.regularizer import PIFSRegularizer
from pifskit.torch.testing import TinyDiT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = args.device
    model = TinyDiT(channels=1, size=28, patch=4, dim=64, depth=2, heads=4).to(dev).train()
    sched = get_schedule("ddpm")
    ab = torch.as_tensor(sched.alphas_cumprod, dtype=torch.float32, device=dev)
    chain = make_chain(sched, 10, "trailing")
    cd = ChainDenoiser(ModelDenoiser(model, "epsilon", "discrete"), chain)
    part = Partition.patches((1, 28, 28), 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x0 = torch.randn(args.batch, 1, 28, 28, device=dev).clamp(-1, 1)

    def plain_loss():
        t = torch.randint(0, 1000, (args.batch,), device=dev)
        e = torch.randn_like(x0)
        a = ab[t].sqrt().reshape(-1, 1, 1, 1)
        s = (1 - ab[t]).sqrt().reshape(-1, 1, 1, 1)
        return torch.mean((model(a * x0 + s * e, t.float()) - e) ** 2)

    configs = {
        "default (n_blocks=1, n_probes=1, fraction=1/8)": PIFSRegularizer(chain, part),
        "n_blocks=4, fraction=0.25": PIFSRegularizer(chain, part, n_blocks=4, sample_fraction=0.25),
        "n_blocks=8, fraction=0.5": PIFSRegularizer(chain, part, n_blocks=8, sample_fraction=0.5),
    }

    def step(reg):
        opt.zero_grad()
        loss = plain_loss()
        if reg is not None:
            loss = loss + reg(cd, x0)
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()

    for reg in [None, *configs.values()]:  # warm-up
        step(reg)
    times: dict[str, list[float]] = {"plain": [], **{k: [] for k in configs}}
    for _ in range(args.iters):
        for name, reg in [("plain", None), *configs.items()]:
            t0 = time.perf_counter()
            step(reg)
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["plain"])
    print(f"device: {dev}, TinyDiT 28x28 patch 4 ({sum(p.numel() for p in model.parameters())} parameters), "
          f"batch {args.batch}, {args.threads} thread(s), {args.iters} interleaved steps each, medians")
    print(f"{'step':<52}{'time [ms]':>10}{'ratio':>8}")
    print(f"{'plain denoising step':<52}{1000 * base:>10.1f}{1.0:>8.2f}")
    for name in configs:
        med = statistics.median(times[name])
        print(f"{'+ PIFS regulariser, ' + name:<52}{1000 * med:>10.1f}{med / base:>8.2f}")
    print(f"(spread: plain IQR {1000 * np.subtract(*np.percentile(times['plain'], [75, 25])):.1f} ms)")


if __name__ == "__main__":
    main()
