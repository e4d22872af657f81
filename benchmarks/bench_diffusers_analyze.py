"""``analyze-model --diffusers`` at realistic model size: time and float32-vs-half agreement, side by side.

Builds a random UNet2DConditionModel with SD 1.5's architecture (about 860 M parameters; no weights
are downloaded: random weights have the same cost), saves it with save_pretrained next to SD 1.5's
scheduler config, and runs ``pifskit analyze-model --diffusers`` on it in float32 and in the given
half dtype at a small latent, printing the wall time of each, their ratio, and the relative
difference of the measured L_B per step. ``--tiny`` uses a toy UNet (checks the script on a CPU).

    python benchmarks/bench_diffusers_analyze.py --device cuda --latent-size 16 --half float16
    python benchmarks/bench_diffusers_analyze.py --tiny            # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SD15_SCHEDULER = {"_class_name": "PNDMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
                  "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1, "skip_prk_steps": True,
                  "set_alpha_to_one": False, "prediction_type": "epsilon", "timestep_spacing": "leading"}


def build(folder: Path, tiny: bool) -> None:
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    if tiny:
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                    block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                    attention_head_dim=2, norm_num_groups=4)
    else:  # SD 1.5's UNet config (diffusers' defaults are SD 1.x's architecture)
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    unet.save_pretrained(folder / "unet")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER))
    n = sum(p.numel() for p in unet.parameters())
    print(f"UNet2DConditionModel with {n / 1e6:.1f} M parameters saved")


def run(folder: Path, dtype: str, args) -> tuple[float, list[float]]:
    from pifskit.cli import main

    out = folder / f"report-{dtype}"
    t0 = time.perf_counter()
    rc = main(["analyze-model", "--diffusers", str(folder / "unet"), "--steps", str(args.steps), "--k", str(args.k),
               "--trajectories", "1", "--points", "1", "--latent-size", str(args.latent_size), "--device", args.device,
               "--dtype", dtype, "--out", str(out), "--json"])
    dt = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"analyze-model failed ({dtype})")
    res = json.loads((out / "report.json").read_text())
    return dt, res["steps"]["block_max_frob"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", default="float16", choices=("float16", "bfloat16"))
    ap.add_argument("--latent-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--tiny", action="store_true", help="toy UNet (CPU smoke run)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build(folder, args.tiny)
        t32, lb32 = run(folder, "float32", args)
        th, lbh = run(folder, args.half, args)
    rel = [abs(a - b) / abs(a) for a, b in zip(lb32, lbh)]
    print(f"device {args.device}, latent {args.latent_size}x{args.latent_size}x4, d = {4 * args.latent_size ** 2},"
          f" {args.steps} steps, k = {args.k}")
    print(f"float32: {t32:.1f} s   {args.half}: {th:.1f} s   ratio float32/{args.half} = {t32 / th:.2f}")
    print("Frobenius block row sum per step, float32:", " ".join(f"{v:.4g}" for v in lb32))
    print(f"relative difference {args.half} vs float32:", " ".join(f"{v:.2e}" for v in rel))


if __name__ == "__main__":
    main()
