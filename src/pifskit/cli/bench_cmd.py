"""``pifskit bench sampling``: score samplers x schedules x step counts on an exact-score data model."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from .._validate import PifsError
from ..spectra import IMAGENET_PIXEL_VARIANCE
from ._common import add_json_option, dump_json, progress


def _list(text: str, name: str) -> list[str]:
    items = [v.strip() for v in text.split(",") if v.strip()]
    if not items:
        raise PifsError(f"--{name} must be a non-empty comma-separated list")
    return items


def _ints(text: str, name: str) -> list[int]:
    try:
        vals = [int(v) for v in _list(text, name)]
    except ValueError:
        raise PifsError(f"--{name} must be comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in vals):
        raise PifsError(f"--{name} values must be >= 1, got {text!r}")
    return vals


def register(subparsers) -> None:
    from ..exact_bench import (BENCH_SCHEDULES, DEFAULT_N_BOOT, DEFAULT_SAMPLERS, DEFAULT_SAMPLES, DEFAULT_SCHEDULES,
                                  DEFAULT_STEPS, LEVELS_CONTRACT, ORACLE_BUDGET, ORACLE_SAMPLES)
    from ..samplers import SAMPLERS

    bench = subparsers.add_parser("bench", help="benchmarks against exact-score data models")
    sub = bench.add_subparsers(dest="bench_command", metavar="BENCHMARK", parser_class=subparsers._parser_class)
    sub.required = True
    p = sub.add_parser("sampling", help="error vs NFE of every sampler x schedule on a Gaussian / mixture model",
                       description="Score samplers and schedules against an exact data model: closed-form W2/KL "
                                   "for Gaussians, sliced W2 / MMD^2 / mode coverage with bootstrap CIs for mixtures.")
    p.add_argument("--data", default="gmm:digits",
                   help="gaussian:powerlaw:P | gaussian:digits | gmm:digits | gmm:mnist:PATH (default gmm:digits)")
    p.add_argument("--samplers", default=",".join(DEFAULT_SAMPLERS),
                   help=f"comma-separated: {', '.join(SAMPLERS)} (ddim:ETA for eta > 0); default all")
    p.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)), help="comma-separated step counts")
    p.add_argument("--schedules", default=",".join(DEFAULT_SCHEDULES),
                   help=f"comma-separated: {', '.join(BENCH_SCHEDULES)}")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help=f"samples per configuration (default {DEFAULT_SAMPLES}; the published tables use 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write report.html, report.json, results.md and the plots here")
    p.add_argument("--base-schedule", default="sd", help="training schedule whose noise range all chains span (default sd)")
    p.add_argument("--dim", type=int, default=None, help="PCA dimension (default: 64 for MNIST, none for digits)")
    p.add_argument("--fit", default="class", choices=("class", "em"), help="mixture per class or by EM")
    p.add_argument("--components", type=int, default=10, help="EM components (default 10)")
    p.add_argument("--jitter", type=float, default=None,
                   help="variance added to covariances (default: the data's dequantisation variance)")
    p.add_argument("--resolution", type=int, default=64, help="gaussian:powerlaw image side (default 64)")
    p.add_argument("--channels", type=int, default=3, help="gaussian:powerlaw channels (default 3)")
    p.add_argument("--pixel-variance", type=float, default=IMAGENET_PIXEL_VARIANCE,
                   help=f"gaussian:powerlaw mean variance (default ImageNet's {IMAGENET_PIXEL_VARIANCE:.4f})")
    p.add_argument("--batch-size", type=int, default=4096, help="rows per sampler call (bounds memory)")
    p.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT,
                   help=f"bootstrap replicates for the CIs (default {DEFAULT_N_BOOT}; the published tables use 100)")
    p.add_argument("--mmd-samples", type=int, default=1000, help="samples used by MMD^2 (default 1000)")
    p.add_argument("--levels", action="append", default=[], metavar="NAME=FILE",
                   help="add a schedule from a JSON file (repeatable). " + LEVELS_CONTRACT)
    p.add_argument("--reference", default=None, metavar="SCHEDULE",
                   help="mixtures: the schedule the paired differences are taken to, and compared with the best "
                        "other (default: 'pifskit' if run, else the first of --schedules; a --levels NAME may be given)")
    p.add_argument("--oracle", action="store_true",
                   help="mixtures: also optimise the levels per sampler and step count on this bench's sliced W2 "
                        "(coordinate search in log sigma from the best schedule, on a separate optimisation sample), "
                        "score them on the evaluation sample and report every schedule's distance to them")
    p.add_argument("--oracle-budget", type=int, default=ORACLE_BUDGET,
                   help=f"objective evaluations per sampler and step count, starts included (default {ORACLE_BUDGET})")
    p.add_argument("--oracle-samples", type=int, default=ORACLE_SAMPLES,
                   help=f"rows of the oracle's optimisation sample (default {ORACLE_SAMPLES})")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    add_json_option(p)
    p.set_defaults(handler=run_bench_sampling)


def run_bench_sampling(args: argparse.Namespace) -> int:
    from ..exact_bench import load_levels, markdown_tables, parse_bench_data, run_sampling_benchmark, write_report

    samplers = _list(args.samplers, "samplers")
    steps = _ints(args.steps, "steps")
    schedules = _list(args.schedules, "schedules")
    if args.samples < 2:
        raise PifsError(f"--samples must be >= 2, got {args.samples}")
    levels = {}
    for spec in args.levels:
        name, eq, path = spec.partition("=")
        if not eq or not path:
            raise PifsError(f"--levels takes NAME=FILE, got {spec!r}")
        label, by_n = load_levels(name.strip(), path, steps)
        if label in levels or label in schedules:
            raise PifsError(f"--levels name {label!r} given twice")
        levels[label] = by_n
    data = parse_bench_data(args.data, dim=args.dim, fit=args.fit, components=args.components, jitter=args.jitter,
                            seed=args.seed, resolution=args.resolution, channels=args.channels,
                            pixel_variance=args.pixel_variance)
    n_cells = len(samplers) * len(steps)
    total = n_cells * len(schedules) + len(samplers) * sum(len(v) for v in levels.values())
    if args.oracle:
        total += n_cells * (1 + args.oracle_budget)  # the search's evaluations, then the oracle's own row
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with progress(f"bench sampling ({data.kind})", total, enabled=not args.json) as advance:
            report = run_sampling_benchmark(data, samplers, steps, schedules, n_samples=args.samples, seed=args.seed,
                                            base_schedule=args.base_schedule, batch_size=args.batch_size,
                                            n_boot=args.n_boot, mmd_samples=args.mmd_samples, progress=advance,
                                            levels=levels, oracle=args.oracle, oracle_budget=args.oracle_budget,
                                            oracle_samples=args.oracle_samples, reference=args.reference)
    for w in caught:
        print(f"pifskit: warning: {w.message}", file=sys.stderr)
    report["timing"]["total_seconds"] = time.perf_counter() - t0
    if args.out:
        paths = write_report(report, args.out, plots=not args.no_plots)
        report["files"] = [str(p) for p in paths]
    sps = report["timing"]["samples_per_second"]
    rate = f"{sps:.0f} samples/s" if sps else "closed form (no sampling)"
    if args.json:
        dump_json(report)
    else:
        print(markdown_tables(report))
        if args.out:
            print(f"wrote {', '.join(report['files'])}")
    print(f"pifskit bench sampling: {rate}, {report['timing']['total_seconds']:.1f} s total", file=sys.stderr)
    return 0
