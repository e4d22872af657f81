"""``pifskit analyze-model``: measure a denoiser's block Jacobians and Lyapunov spectrum along its DDIM chain.

The model is a training checkpoint (file or run directory) or a Python entry point
``module:factory`` returning (model, info) with info keys prediction_type, sample_shape
(C, H, W), timestep_convention (discrete / continuous / sigma / logsnr / flow), schedule, patch.
The report (report.json, report.png, report.html in --out) puts the measured L_B(D_t) beside
L*_t, the measured M_off(t) beside the surrogate's, and the numerical Lyapunov spectrum and
Kaplan-Yorke dimension beside the analytic ones.
"""

from __future__ import annotations

import argparse

from .._validate import PifsError
from ..spectra import IMAGENET_PIXEL_VARIANCE
from ._common import add_chain_options, add_json_option, chain_from_args, dump_json, progress


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze-model", help="block Jacobian and Lyapunov analysis of a denoiser",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, metavar="ENTRY",
                   help="checkpoint path or 'module:factory' (e.g. pifskit.torch.testing:tiny_dit); "
                        "or --diffusers PATH")
    g = p.add_argument_group("diffusers model (instead of --model)")
    g.add_argument("--diffusers", metavar="PATH", default=None,
                   help="a local folder written by save_pretrained: a pipeline (model_index.json) or one model "
                        "(config.json); UNet2DConditionModel, UNet2DModel, SD3Transformer2DModel or FluxTransformer2DModel")
    g.add_argument("--subfolder", default=None, help="the model's subfolder in a pipeline folder (unet, transformer; "
                                                      "default: whichever exists)")
    g.add_argument("--prompt", default=None,
                   help="condition on this prompt through the pipeline's text encoders (default: the empty "
                        "prompt where the folder has text encoders, else zeros; the report states which)")
    g.add_argument("--latent-size", type=int, default=None,
                   help="latent side H = W the model is analysed at (default: its config's sample_size)")
    g.add_argument("--device", default="cpu", help="device the diffusers model runs on (cpu, cuda, cuda:1, ...)")
    g.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="the diffusers model's compute dtype (the chain, Jacobian norms and QR stay float32 / "
                        "--float64); half precision is for GPUs: its Jacobians carry ~1e-3 relative noise")
    add_chain_options(p)
    p.set_defaults(schedule=None)
    g = p.add_argument_group("data spectrum (analytic surrogate)")
    g.add_argument("--spectrum", default="powerlaw:2", help="powerlaw:P (at the model's resolution), digits, file:PATH")
    g.add_argument("--pixel-variance", type=float, default=None,
                   help=f"mean per-pixel variance for powerlaw ([-1, 1] units; default: the model info's, else ImageNet's {IMAGENET_PIXEL_VARIANCE:.4f})")
    g = p.add_argument_group("analysis")
    g.add_argument("--patch", type=int, default=None, help="patch size of the block partition (default: model info, else 2)")
    g.add_argument("--points", type=int, default=2, help="chain states per step for block norms (default 2)")
    g.add_argument("--k", type=int, default=8, help="Lyapunov exponents computed (top-k, default 8)")
    g.add_argument("--trajectories", type=int, default=2, help="trajectories averaged (default 2)")
    g.add_argument("--refine", type=int, default=1, help="forward-backward frame refinement sweeps (default 1)")
    g.add_argument("--probes", type=int, default=8, help="probes per block when block norms are estimated")
    g.add_argument("--exact", choices=("auto", "yes", "no"), default="auto",
                   help="full Jacobian block norms (auto: when d <= 1024)")
    g.add_argument("--float64", action="store_true", help="run the model in float64")
    g.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="analyze-report", help="report directory (default ./analyze-report)")
    add_json_option(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..spectra import parse_spectrum
    from ..report.model import ky_text, write_model_report
    from ..torch.analysis import analyze_model, load_model, model_info
    from ..torch.train import check_out_dir

    check_out_dir(args.out)  # before any work: an existing file or an unwritable folder -> one line, exit 2
    config = None
    if args.diffusers:
        from ..torch.diffusers_models import load_diffusers_model

        if args.model:
            raise PifsError("give either --model or --diffusers, not both")
        if args.latent_size is not None and args.latent_size < 1:
            raise PifsError(f"--latent-size must be >= 1, got {args.latent_size}")
        model, info = load_diffusers_model(args.diffusers, args.subfolder, args.prompt, device=args.device,
                                           dtype=args.dtype, resolution=args.latent_size)
        config = info["scheduler_config"]  # the model's own scheduler, unless --schedule / --diffusers-config
    elif args.model:
        model, info = load_model(args.model)
    else:
        raise PifsError("give --model ENTRY or --diffusers PATH")
    info = model_info(info)
    shape = info["sample_shape"]
    schedule, chain = chain_from_args(args, schedule=info.get("schedule", "sd"), config=config)
    patch = args.patch or int(info.get("patch", 2))
    spectrum = None
    if args.spectrum:
        if args.spectrum.startswith("powerlaw") and (len(shape) != 3 or shape[1] != shape[2]):
            raise PifsError("a powerlaw spectrum needs square C x H x W samples; pass --spectrum file:PATH")
        pv = args.pixel_variance if args.pixel_variance is not None else float(info.get("pixel_variance", IMAGENET_PIXEL_VARIANCE))
        res = shape[1] if len(shape) == 3 else 1
        spectrum = parse_spectrum(args.spectrum, res, shape[0], pv)
    exact = None if args.exact == "auto" else args.exact == "yes"
    with progress("analyzing steps", chain.n_steps, enabled=not args.json) as advance:
        result = analyze_model(model, info, chain, spectrum, patch=patch, points=args.points, k=args.k,
                               trajectories=args.trajectories, refine=args.refine, probes=args.probes, exact=exact,
                               float64=args.float64, seed=args.seed, schedule=schedule, progress=advance)
    paths = write_model_report(result, args.out)
    result["report"] = paths
    if args.json:
        dump_json(result)
    else:
        st = result["steps"]
        print(f"analyzed {args.model or args.diffusers} over {chain.name} ({chain.n_steps} steps), d = {result['d']}")
        if args.diffusers:
            print(f"conditioning: {info['conditioning']}" + (f"; {info['notes']}" if info.get("notes") else ""))
        print(f"{'step':>4} {'logSNR':>9} {'L*':>9} {'L_B':>10} {'M_off':>7}")
        for i in range(chain.n_steps):
            print(f"{i:>4} {st['logsnr'][i]:>9.3f} {st['contraction_threshold'][i]:>9.4f} "
                  f"{st['block_max'][i]:>10.4g} {st['offdiag_mass'][i]:>7.3f}")
        num = result["numerical"]
        low = bool(num.get("kaplan_yorke_is_lower_bound"))
        print(f"numerical KY (top {num['k']}) {ky_text(num['kaplan_yorke'], low)}"
              f"{' (lower bound: raise --k)' if low else ''}; report: {paths['html']}")
    return 0
