"""``pifskit design {offset, shift, weighting, steps, practice}``: the design criteria of theory section 6."""

from __future__ import annotations

import argparse
import time

import numpy as np

from .._validate import PifsError
from ..design.solvers import SOLVERS
from ..design.steps import MIN_GAP
from ..scheduler_config import config_levels
from ..spectra import IMAGENET_PIXEL_VARIANCE, parse_spectrum
from ._common import add_json_option, add_schedule_options, add_spectrum_options, dump_json, schedule_from_args

#: defaults of ``design steps``: an SD-style latent (64 x 64 x 4, unit variance, |k|^-1.5 spectrum)
STEPS_SPECTRUM = "powerlaw:1.5"
STEPS_CHANNELS = 4
STEPS_PIXEL_VARIANCE = 1.0


def _spectrum(args: argparse.Namespace):
    return parse_spectrum(args.spectrum, args.resolution, args.channels, args.pixel_variance)


def _offset(args: argparse.Namespace) -> int:
    from ..design.offset import cosine_offset_for_bits

    d = cosine_offset_for_bits(args.bits, args.timesteps, args.rule)
    if args.json:
        dump_json({"criterion": "offset", **d.to_dict()})
        return 0
    print(f"cosine offset for {d.bits}-bit data, T = {d.num_train_timesteps} (rule {d.rule!r}):")
    print(f"  target first-level noise s_1  {d.target:.6g}")
    print(f"  derived offset s              {d.offset:.6g}   (first sigma {d.first_sigma:.6g})")
    print(f"  published s = 0.008 gives s_1 {d.published_first_noise:.6g}; derived / published = "
          f"{d.offset / d.published_offset:.3f}")
    return 0


def _shift(args: argparse.Namespace) -> int:
    from ..design.shift import powerlaw_shift, shift_from_spectra, simple_diffusion_shift

    if args.resolution <= 0 or args.base_resolution <= 0:
        raise PifsError(f"resolutions must be positive, got {args.resolution} and {args.base_resolution}")
    if args.spectrum:
        if not args.base_spectrum:
            raise PifsError("--spectrum needs --base-spectrum (the same data at the base resolution)")
        sp = parse_spectrum(args.spectrum, args.resolution, args.channels, args.pixel_variance)
        sp0 = parse_spectrum(args.base_spectrum, args.base_resolution, args.channels, args.pixel_variance)
        d = shift_from_spectra(sp, sp0, args.resolution, args.base_resolution, args.top, source="measured spectra")
    else:
        d = powerlaw_shift(args.resolution, args.base_resolution, args.exponent, args.channels, args.pixel_variance,
                           args.top)
    out = d.to_dict()
    out["simple_diffusion_shift"] = simple_diffusion_shift(args.resolution, args.base_resolution)
    out["shifted_cosine"] = repr(d.shifted_cosine())
    out["rectified_flow"] = repr(d.rectified_flow())
    if args.json:
        dump_json({"criterion": "shift", **out})
        return 0
    print(f"resolution shift {d.resolution}^2 vs {d.base_resolution}^2 from {d.source}:")
    print(f"  top variance {d.top:.6g} vs {d.base_top:.6g} (ratio {d.top / d.base_top:.4g}, "
          f"pixel-count ratio {(d.resolution / d.base_resolution) ** 2:.4g})")
    print(f"  logSNR shift      {d.logsnr_shift:+.4f}   (idealised -2 log(R/R0) = {d.idealised_logsnr_shift:+.4f})")
    print(f"  timestep shift    {d.timestep_shift:.4f}   (idealised sqrt(m/n) = {d.idealised_timestep_shift:.4f}; "
          "SD3 uses 3.0 at 1024^2)")
    return 0


def _weighting(args: argparse.Namespace) -> int:
    from ..design.weighting import design_weighting

    sched, _ = schedule_from_args(args)
    sp = _spectrum(args)
    d = design_weighting(sched, sp, args.prediction, args.gamma, args.timesteps_count)
    if args.json:
        dump_json({"criterion": "weighting", "spectrum": sp.name, **d.to_dict()})
        return 0
    T = d.weights.size
    print(f"loss weights ({d.prediction}-prediction) for {sp.name}, mean variance {d.pixel_variance:.4g}:")
    print(f"  gamma = 1/lambda_bar = {d.gamma:.4f}   soft-min fit gamma = {d.gamma_fit:.4f}   "
          f"(Min-SNR published {d.gamma_published:g})")
    print(f"  {'timestep':>8} {'logSNR':>9} {'weight':>10} {'min-snr':>10}")
    for n in sorted(set(np.linspace(0, T - 1, min(T, 11)).round().astype(int).tolist())):
        print(f"  {n:>8d} {d.logsnr[n]:>9.3f} {d.weights[n]:>10.4g} {d.min_snr[n]:>10.4g}")
    return 0


def _steps(args: argparse.Namespace) -> int:
    from ..design.steps import optimal_steps, rms_log_sigma

    sched, cfg = schedule_from_args(args)
    if args.steps < 1:
        raise PifsError(f"--steps must be >= 1, got {args.steps}")
    level_info = None
    if args.model and args.model_method == "trajectory":
        from . import design_trajectory

        return design_trajectory.run(args, sched, cfg)
    if args.model:
        sched, sp, level_info = _model_spectrum(args, sched)
        cfg = {} if level_info.get("schedule_from_model") else cfg
    elif args.data:
        from ..design.data_spectrum import data_spectrum

        sp = data_spectrum(args.data)
    else:
        sp = _spectrum(args)
    extra = {} if args.fixed_endpoints else config_levels(sched, cfg, args.steps)
    t0 = time.perf_counter()
    d = optimal_steps(sched, sp, args.steps, solver=args.solver, start=args.start,
                      fixed_endpoints=args.fixed_endpoints, min_gap=args.min_gap, extra_baselines=extra,
                      metric=args.metric)
    elapsed = time.perf_counter() - t0
    out = {"criterion": "steps", "schedule": getattr(sched, "name", type(sched).__name__), "spectrum": sp.name,
           "spectrum_source": sp.source if level_info is not None else ("data " + args.data) if args.data else
           ("file" if args.spectrum.startswith("file:") else f"assumption: preset {args.spectrum}"),
           "steps": args.steps, **d.to_dict(), "seconds": elapsed}
    if level_info is not None:  # model-aware: the estimate's cost beside the optimiser's
        out.update(model=args.model, model_calls=level_info["model_calls"],
                   seconds_model=level_info["seconds_estimate"], seconds=elapsed + level_info["seconds_estimate"],
                   seconds_optimiser=elapsed, level_spectra=level_info)
    for name, b in out["baselines"].items():
        bs = np.asarray(b["sigmas"], dtype=float)
        if np.isfinite(bs[:-1]).all() and np.isfinite(d.sigmas[:-1]).all() and bs.size == d.sigmas.size:
            b["rms_log_sigma_to_derived"] = rms_log_sigma(bs, d.sigmas)
    for key in ("ays-sd15", "ays-sdxl"):
        if "rms_log_sigma_to_derived" in out["baselines"].get(key, {}):
            out[f"rms_log_sigma_to_{key}"] = out["baselines"][key]["rms_log_sigma_to_derived"]
    if args.json:
        dump_json(out)
        return 0
    if level_info is not None:
        print(f"model-aware: {sp.source}")
        print(f"  {level_info['model_calls']} model calls (JVPs + forwards), {level_info['seconds_estimate']:.1f} s")
    label = "W2" if d.metric == "w2" else "SW2"
    print(f"{label}-optimal {args.steps}-step chain for {out['schedule']}, solver {d.solver}, start {d.start}, "
          f"with {sp.name} ({d.iterations} L-BFGS iterations, {elapsed * 1e3:.0f} ms):")
    print("  sigmas    " + ", ".join(f"{s:.4g}" for s in d.sigmas))
    if d.timesteps is not None:
        print("  timesteps " + ", ".join(str(int(t)) for t in d.timesteps))
    if d.flow_sigmas is not None:
        print("  flow sigmas (t')             " + ", ".join(f"{s:.4g}" for s in d.flow_sigmas))
        print(f"  to set_timesteps(sigmas=...) " + ", ".join(f"{s:.4g}" for s in d.flow_sigmas_unshifted)
              + f"   (the scheduler applies its shift {d.flow_shift:.4g} on top)")
    print(f"  W2 {d.w2:.4f}" + (f"  (integer timesteps: {d.w2_timesteps:.4f})" if d.w2_timesteps is not None else ""))
    print(f"  SW2 {d.sw2:.4f} (+- {d.sw2_se or 0.0:.1e} Monte Carlo)"
          + (f"  (integer timesteps: {d.sw2_timesteps:.4f})" if d.sw2_timesteps is not None else ""))
    if out["baselines"]:
        print(f"  {'baseline':<16} {'W2':>9} {'SW2':>9}   (sorted by {label}, the criterion minimised)")
        for name, b in sorted(out["baselines"].items(), key=lambda kv: kv[1][d.metric]):
            print(f"  {name:<16} {b['w2']:>9.4f} {b['sw2']:>9.4f}")
    return 0


def _model_spectrum(args: argparse.Namespace, sched):
    """(schedule, LevelSpectra, info) for ``--model ENTRY`` (torch layer; a checkpoint brings its schedule)."""
    try:
        from ..torch.model_spectrum import level_spectra_for_entry, load_model_entry
    except ImportError as exc:
        raise PifsError(f"--model needs torch (pip install 'pifskit[torch]'): {exc}") from None
    from ..design.baselines import design_range
    from ._common import progress

    t0 = time.perf_counter()
    me = load_model_entry(args.model)
    from_model = me.schedule is not None
    if from_model:
        sched = me.schedule
    x0, x0_source = None, ""
    if args.data:
        from ..datasets import load_dataset

        ds = load_dataset(args.data)
        x0 = ds.images.reshape(len(ds.images), -1)[:2000]
        x0_source = f"data {args.data} ({x0.shape[0]} rows)"
    smin, smax = design_range(sched)
    n_total = args.model_levels + max(0, min(args.model_refine, args.model_levels - 1))
    with progress("model spectrum (levels)", n_total, enabled=not args.json) as advance:
        ls = level_spectra_for_entry(me, (smin, smax), x0=x0, x0_source=x0_source, n_levels=args.model_levels,
                                     refine=args.model_refine, n_states=args.model_states, rank=args.model_rank,
                                     gains=args.model_gains, progress=advance)
    info = {**ls.to_dict(), "seconds_estimate": time.perf_counter() - t0, "schedule_from_model": from_model}
    return sched, ls, info


def _practice(args: argparse.Namespace) -> int:
    from ..design.practice import practice_table, practice_table_html

    rows = practice_table()
    if args.json:
        dump_json({"design": rows})
        return 0
    if args.html:
        print(practice_table_html(rows))
        return 0
    for r in rows:
        pub, der = r["published"], r["derived"]
        fmt = (lambda v: "[" + ", ".join(f"{x:.3f}" for x in v) + "]" if isinstance(v, list) else f"{v:.4g}")
        print(f"{r['practice']}: published {fmt(pub)}, derived {fmt(der)}, {r['comparison']} {r['value']:.3f}")
        print(f"    {r['inputs']}  [{r['source']}]")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("design", help="design criteria: cosine offset, resolution shift, loss weighting, steps",
                              description="Derive the four empirical design choices from the PIFS geometry.")
    sub = p.add_subparsers(dest="design_command", metavar="CRITERION", parser_class=type(p))
    sub.required = True

    po = sub.add_parser("offset", help="cosine offset whose first noisy level releases the quantisation bin")
    po.add_argument("--timesteps", type=int, default=1000, help="training timesteps T (default 1000)")
    po.add_argument("--bits", type=int, default=8, help="bit depth of the data, 1..16 (default 8)")
    po.add_argument("--rule", default="bin", choices=["bin", "bin-std"],
                    help="target s_1: the bin width 2/(2^B-1) (Nichol & Dhariwal) or its uniform-noise std")
    add_json_option(po)
    po.set_defaults(handler=_offset)

    ps = sub.add_parser("shift", help="resolution shift (logSNR and rectified-flow alpha)")
    ps.add_argument("--resolution", type=int, required=True, help="target resolution R")
    ps.add_argument("--base-resolution", type=int, default=64, help="base resolution R0 (default 64)")
    ps.add_argument("--channels", type=int, default=3, help="channels of the power-law model (default 3)")
    ps.add_argument("--exponent", type=float, default=2.0, help="power-law exponent p of |k|^-p (default 2)")
    ps.add_argument("--pixel-variance", type=float, default=IMAGENET_PIXEL_VARIANCE,
                    help=f"power-law mean variance (default {IMAGENET_PIXEL_VARIANCE:.5g}, ImageNet's)")
    ps.add_argument("--spectrum", default=None, help="measured spectrum at R: file:PATH (or powerlaw:P / digits)")
    ps.add_argument("--base-spectrum", default=None, help="measured spectrum at R0 (needed with --spectrum)")
    ps.add_argument("--top", type=int, default=1, help="geometric mean of the top k eigenvalues (default 1)")
    add_json_option(ps)
    ps.set_defaults(handler=_shift)

    pw = sub.add_parser("weighting", help="error-sensitivity loss weights and the effective Min-SNR gamma")
    add_schedule_options(pw)
    add_spectrum_options(pw)
    pw.add_argument("--prediction", default="eps",
                    help="loss units: eps|epsilon, x0|sample, v|v_prediction (case-insensitive; default eps)")
    pw.add_argument("--gamma", type=float, default=5.0, help="Min-SNR gamma of the comparison curve (default 5)")
    pw.add_argument("--timesteps-count", type=int, default=1000,
                    help="T for sampling a continuous schedule (default 1000; discrete schedules use their own)")
    add_json_option(pw)
    pw.set_defaults(handler=_weighting)

    pst = sub.add_parser("steps", help="W2-optimal sampling steps (defect equidistribution)")
    add_schedule_options(pst)
    add_spectrum_options(pst, spectrum=STEPS_SPECTRUM, channels=STEPS_CHANNELS, pixel_variance=STEPS_PIXEL_VARIANCE)
    pst.add_argument("--steps", type=int, default=10, help="number of sampling steps N (default 10)")
    pst.add_argument("--fixed-endpoints", action="store_true",
                     help="AYS convention: N + 1 levels with sigma_min fixed, then 0 (default: N levels, then 0)")
    pst.add_argument("--solver", default="ddim", choices=list(SOLVERS),
                     help="the sampler the levels are designed for (closed form per solver; default ddim)")
    pst.add_argument("--start", default=None, choices=["prior", "prior-ve", "marginal"],
                     help="start law: prior = N(0, I) in VP units (default; 'prior-ve' = N(0, sigma_max^2) in VE "
                          "units, the default for edm schedules) as samplers start; marginal = the theory's surrogate "
                          "(exact marginal at sigma_max; does not charge a late start)")
    pst.add_argument("--metric", default="w2", choices=["w2", "sw2"],
                     help="criterion minimised: w2 = per-direction W2 of the solver's Gaussian output law (default); "
                          "sw2 = its sliced W2 over 1024 fixed unit projections (what 'pifskit bench sampling' "
                          "measures; it matches projected variances). Both are reported")
    pst.add_argument("--data", default=None,
                     help="use the PCA spectrum of a data set (digits, mnist:DIR, folder:DIR, npz:PATH, ...) "
                          "instead of --spectrum")
    pst.add_argument("--model", default=None, metavar="ENTRY",
                     help="model-aware design (see --model-method): a pifskit checkpoint (run folder or file; "
                          "its training schedule is used) or gmm:digits / gmm:mnist:PATH (exact mixture). Method "
                          "spectrum: with --data, the data rows centre the noisy states and give the basis; else "
                          "the model's own DDIM samples")
    from . import design_trajectory

    design_trajectory.add_arguments(pst)
    pst.add_argument("--model-levels", type=int, default=8,
                     help="--model: log-uniform levels before refinement (default 8)")
    pst.add_argument("--model-refine", type=int, default=4,
                     help="--model: extra levels bisecting where the measured spectrum changes most (default 4)")
    pst.add_argument("--model-states", type=int, default=8, help="--model: noisy states per level (default 8)")
    pst.add_argument("--model-gains", default="jacobian", choices=["jacobian", "regression"],
                     help="--model: mean Jacobian quadratic forms b^T J b (JVPs; default) or the least-squares "
                          "linear response along b (forwards only, 512 states; the data's Gaussian for a perfect "
                          "model)")
    pst.add_argument("--model-rank", type=int, default=None,
                     help="--model: directions measured one by one (default min(d, 64)); the rest share a "
                          "Hutchinson-estimated gain")
    pst.add_argument("--min-gap", type=float, default=MIN_GAP,
                     help="smallest log-sigma gap between free levels, as a fraction of the mean gap "
                          f"(default {MIN_GAP}; 0 = off)")
    add_json_option(pst)
    pst.set_defaults(handler=_steps)

    pp = sub.add_parser("practice", help="the theory-vs-practice table")
    pp.add_argument("--html", action="store_true", help="print the HTML <table> fragment")
    add_json_option(pp)
    pp.set_defaults(handler=_practice)
