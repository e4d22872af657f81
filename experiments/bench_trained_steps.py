#!/usr/bin/env python3
"""Solver x step schedule on a trained pifskit checkpoint, at a fixed budget of denoiser evaluations (NFE).

Every cell (solver, NFE, schedule) samples the checkpoint's EMA model with one of pifskit's numpy samplers
(``pifskit.samplers``: DDIM eta = 0, Euler, Heun, DPM-Solver++(2M)) on the chain through the schedule's
noise levels, and scores the samples with the offline classifier metric (``pifskit.torch.quality``:
feature Frechet distance and k-NN precision / recall against the classifier's held-out split).

Steps per NFE: DDIM, Euler and DPM++(2M) spend one evaluation per step, so N = NFE steps (N noisy levels,
then the step to sigma = 0). Heun spends two per step except on its Euler steps (the last one, to
sigma = 0, and a first one from pure noise), so N is the largest step count with
``pifskit.samplers.sampler_nfe('heun', chain) <= NFE`` (2N - 1 on a chain that starts below pure noise:
NFE 5 -> 3 steps, 10 -> 5 steps = 9 NFE, 20 -> 10 steps = 19 NFE); the NFE actually spent is recorded.

Schedules (all N noisy VE levels then 0): every list of ``pifskit.design.baselines.baseline_levels`` for
the checkpoint's training schedule (trailing, leading, linspace, uniform logSNR, Karras rho = 7,
KL-optimal, beta(0.6, 0.6), DMN; AYS where the schedule is SD's), ``pifskit`` = the model-free design
``pifskit.design.steps.optimal_steps(schedule, spectra.from_data(train images), N, solver=SOLVER)`` (its default
start), optionally ``ays-sd15`` transplanted (SD1.5's published list; ``--schedules`` must name it), and
every ``--levels NAME=FILE`` (JSON: ``{"sigmas": [...]}`` for one N -- e.g. ``pifskit design steps --json``
-- or ``{"N": {"sigmas": ...} | [...], ...}`` / a list of such objects for several N; an object with a
``solver`` key is used for that solver only).

``--model-aware`` adds ``pifskit-model``: the model-aware design ``pifskit.design.trajectory.trajectory_steps``
run on the sampled model itself (EMA weights, the same clamp) for that solver and N, with the CLI's defaults
(32 starts from a numpy stream apart from the evaluation's, 80 teacher levels, 40 refinement evaluations up to
10 NFE and ceil(400 / NFE) beyond,
the principal-axes W2 to the teacher's law);
its cost (model calls of 32 rows, seconds) is stored under ``designs`` in results.json. It also adds ``gits``:
GITS's levels (Chen et al. 2024; the same teacher and DP with the first-order step, no refinement).
``--reference NAME`` picks the schedule of the paired differences (default ``pifskit``).

Common random numbers: seed k draws the same start noise x_T ~ N(0, I) (numpy ``default_rng(k)``) for
every schedule and solver. Paired differences against ``pifskit`` per seed, with their mean and a 95 %
t-interval over seeds. The floor: real training images (n per seed, a different subset per seed) against
the same held-out set.

Cells already in ``OUT/results.json`` are skipped, so a grid can be run in parts (``--solvers``,
``--nfe``) and the table is rebuilt from everything measured.

    python experiments/bench_trained_steps.py --checkpoint runs/unet --classifier runs/classifier \
        --data mnist:$MNIST --out runs/bench_trained --nfe 5,10,20 --seeds 3 --n 250
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from pifskit.chains import Chain, ays_sigmas
from pifskit.datasets import parse_data_spec
from pifskit.design.baselines import baseline_levels, starts_from_noise
from pifskit.spectra import from_data
from pifskit.design.steps import optimal_steps
from pifskit.samplers import get_sampler, sampler_nfe
from pifskit.schedules import DiscreteSchedule, get_schedule

SOLVERS = ("ddim", "euler", "heun", "dpmpp2m")
SOLVER_LABEL = {"ddim": "DDIM", "euler": "Euler", "heun": "Heun", "dpmpp2m": "DPM++(2M)"}
MODEL_FREE = "pifskit"  # the model-free design
REFERENCE = MODEL_FREE  # the schedule of the paired differences (--reference)


# ---------------------------------------------------------------------------
# the model as a numpy denoiser, and the one place a sampler is called
# ---------------------------------------------------------------------------

class NumpyDenoiser:
    """denoiser(x (B, d) float64, logsnr) -> clamped x0 estimate, from a torch checkpoint model.

    The model sees the (fractional) training timestep of the level: ``schedule.timestep_of_sigma``.
    """

    def __init__(self, model, prediction: str, schedule: DiscreteSchedule, image_shape, clip: bool = True,
                 batch_size: int = 500):
        import torch

        from pifskit.torch.adapter import ModelDenoiser

        self.torch = torch
        self.md = ModelDenoiser(model, prediction, "discrete",
                                timestep_fn=lambda l: schedule.timestep_of_sigma(np.exp(-0.5 * np.asarray(l))))
        self.shape = tuple(image_shape)
        self.clip, self.batch_size, self.calls = clip, batch_size, 0

    def __call__(self, x: np.ndarray, logsnr: float) -> np.ndarray:
        torch = self.torch
        self.calls += 1
        outs = []
        with torch.no_grad():
            for lo in range(0, len(x), self.batch_size):
                xt = torch.from_numpy(np.ascontiguousarray(x[lo:lo + self.batch_size], dtype=np.float32))
                d = self.md(xt.reshape((-1,) + self.shape), logsnr)
                if self.clip:
                    d = d.clamp(-1.0, 1.0)
                outs.append(d.reshape(len(xt), -1).double().numpy())
        return np.concatenate(outs)


def run_sampler(solver: str, denoiser, chain: Chain, x_T: np.ndarray) -> np.ndarray:
    """The only call into ``pifskit.samplers`` (k-diffusion order: denoiser, x, chain)."""
    return get_sampler(solver)(denoiser, x_T, chain)


# ---------------------------------------------------------------------------
# schedules
# ---------------------------------------------------------------------------

def steps_for_nfe(solver: str, nfe: int, schedule) -> int:
    """Largest N whose chain costs <= nfe evaluations (see the module docstring)."""
    if solver != "heun":
        return nfe
    from_noise = starts_from_noise(schedule)
    n = max(1, (nfe + 1 + int(from_noise)) // 2)
    return n


def read_levels(spec: str) -> tuple[str, dict]:
    """NAME=FILE -> (name, {(N, solver or None): sigmas})."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise SystemExit(f"--levels wants NAME=FILE, got {spec!r}")
    obj = json.loads(Path(path).read_text())
    out: dict = {}

    def add(o, key_n=None):
        if isinstance(o, dict) and "sigmas" in o:
            sig = np.asarray(o["sigmas"], dtype=np.float64)
            solver = o.get("solver")
        elif isinstance(o, list) and o and not isinstance(o[0], (dict, list)):
            sig, solver = np.asarray(o, dtype=np.float64), None
        else:
            raise SystemExit(f"{path}: no 'sigmas' list in {str(o)[:80]}")
        if sig[-1] != 0.0:
            sig = np.concatenate([sig, [0.0]])
        n = len(sig) - 1
        if key_n is not None and int(key_n) != n:
            raise SystemExit(f"{path}: entry {key_n} holds {n} noisy levels")
        out[(n, solver)] = sig

    if isinstance(obj, dict) and "sigmas" in obj:
        add(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if str(k).isdigit():
                add(v, k)
    elif isinstance(obj, list):
        for v in obj:
            add(v)
    if not out:
        raise SystemExit(f"{path}: no level lists found")
    return name, out


def schedule_levels(schedule, spectrum, solver: str, n: int, extra: dict, wanted, cache: dict) -> dict:
    """name -> sigmas (N noisy levels then 0) for this solver and N."""
    key = (solver, n)
    if key not in cache:
        cache[key] = optimal_steps(schedule, spectrum, n, solver=solver)
    out = {MODEL_FREE: np.asarray(cache[key].sigmas, dtype=np.float64)}
    out.update(baseline_levels(schedule, n))
    if "ays-sd15" in (wanted or ()) and "ays-sd15" not in out:
        out["ays-sd15"] = np.concatenate([ays_sigmas("sd15", n)[:n], [0.0]])
    for name, levels in extra.items():
        for (m, s), sig in levels.items():
            if m == n and (s is None or s == solver):
                out[name] = sig
    if wanted:
        out = {k: v for k, v in out.items() if k in wanted or k in (MODEL_FREE, REFERENCE)}
    return out


MODEL_AWARE = "pifskit-model"


def model_aware_levels(res: dict, den, d: int, schedule, solver: str, n: int) -> np.ndarray:
    """pifskit's model-aware levels (``pifskit.design.trajectory``, CLI defaults), designed once and cached.

    The design's starts x_T come from the numpy stream [0, 7919], not from default_rng(seed) of the evaluation."""
    from pifskit.design.baselines import design_range
    from pifskit.design.trajectory import trajectory_steps

    key = f"{solver}|{n}"
    designs = res.setdefault("designs", {})
    if key not in designs:
        calls0 = den.calls
        r = trajectory_steps(den, d, design_range(schedule), n, solver=solver, baselines=baseline_levels(schedule, n))
        designs[key] = {"sigmas": r.sigmas.tolist(), "seconds": r.seconds, "model_calls": den.calls - calls0,
                        "rows_per_call": r.info["n_starts"], "error": r.global_error, "dp_error": r.dp_global_error,
                        "start_schedule": r.info["start_schedule"], "baseline_errors": r.info["baseline_errors"],
                        "gits_sigmas": r.info["gits_sigmas"], "held_out": r.info.get("held_out"),
                        "evaluations": r.info["evaluations"], "metric": r.info["metric"], "rms": r.info["rms"],
                        "baseline_rms": r.info["baseline_rms"]}
        print(f"{solver:8s} N {n:2d} model-aware design: {designs[key]['model_calls']} calls, "
              f"{r.seconds:.1f} s, error {r.global_error:.4f} (from {r.info['start_schedule']})", flush=True)
    if "gits_sigmas" not in designs[key]:  # a design cached before GITS was recorded: its teacher + DP only
        r = trajectory_steps(den, d, design_range(schedule), n, solver=solver, refine=0)
        designs[key]["gits_sigmas"] = r.info["gits_sigmas"]
    return np.asarray(designs[key]["sigmas"], dtype=np.float64), np.asarray(designs[key]["gits_sigmas"], float)


# ---------------------------------------------------------------------------
# statistics and output
# ---------------------------------------------------------------------------

def paired(values: list[float], ref: list[float]) -> dict:
    d = np.asarray(values) - np.asarray(ref)
    k = len(d)
    hw = float(stats.t.ppf(0.975, k - 1) * d.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
    return {"mean": float(d.mean()), "ci95": hw, "per_seed": d.tolist()}


def summarise(res: dict) -> list[dict]:
    """One row per (solver, nfe, schedule) with every seed measured."""
    groups: dict = {}
    for c in res["cells"].values():
        groups.setdefault((c["solver"], c["nfe_budget"], c["schedule"]), []).append(c)
    rows = []
    for (solver, nfe, sched), cs in sorted(groups.items()):
        cs = sorted(cs, key=lambda c: c["seed"])
        ref = sorted((c for c in res["cells"].values() if c["solver"] == solver and c["nfe_budget"] == nfe
                      and c["schedule"] == REFERENCE), key=lambda c: c["seed"])
        row = {"solver": solver, "nfe_budget": nfe, "steps": cs[0]["steps"], "nfe": cs[0]["nfe"], "schedule": sched,
               "seeds": [c["seed"] for c in cs], "fd": [c["fd"] for c in cs],
               "fd_mean": float(np.mean([c["fd"] for c in cs])),
               "precision_mean": float(np.mean([c["precision"] for c in cs])),
               "recall_mean": float(np.mean([c["recall"] for c in cs])), "sigmas": cs[0]["sigmas"]}
        ref_by_seed = {c["seed"]: c["fd"] for c in ref}
        common = [c["seed"] for c in cs if c["seed"] in ref_by_seed]
        if sched != REFERENCE and len(common) >= 2:
            row["vs_reference"] = paired([c["fd"] for c in cs if c["seed"] in ref_by_seed],
                                       [ref_by_seed[s] for s in common])
        rows.append(row)
    return rows


def markdown(res: dict, rows: list[dict]) -> str:
    fl = res["floor"]
    lines = [f"Classifier-feature Frechet distance (mean over seeds; n = {res['n']} samples per seed, "
             f"{res['n_seeds']} seeds), and in brackets the paired difference to `{REFERENCE}` (mean +- 95 % "
             f"t-interval half-width; > 0: worse than {REFERENCE}). Real-vs-real floor at n = {res['n']}: "
             f"{fl['fd_mean']:.2f} (precision {fl['precision_mean']:.3f}, recall {fl['recall_mean']:.3f}).", ""]
    solvers = [s for s in SOLVERS if any(r["solver"] == s for r in rows)]
    nfes = sorted({r["nfe_budget"] for r in rows})
    scheds = []
    for r in rows:
        if r["schedule"] not in scheds:
            scheds.append(r["schedule"])
    scheds = [REFERENCE] + sorted(s for s in scheds if s != REFERENCE)
    by = {(r["solver"], r["nfe_budget"], r["schedule"]): r for r in rows}
    for solver in solvers:
        cols = [n for n in nfes if any((solver, n, s) in by for s in scheds)]
        steps = {n: next(r for r in rows if r["solver"] == solver and r["nfe_budget"] == n) for n in cols}
        head = " | ".join(f"NFE {n} ({steps[n]['steps']} steps, {steps[n]['nfe']} NFE)" for n in cols)
        lines += [f"**{SOLVER_LABEL[solver]}**", "", f"| schedule | {head} | P / R at NFE {cols[len(cols) // 2]} |",
                  "|---|" + "---|" * len(cols) + "---|"]
        best = {n: min((by[(solver, n, s)]["fd_mean"] for s in scheds if (solver, n, s) in by), default=None)
                for n in cols}
        for s in scheds:
            cells = []
            for n in cols:
                r = by.get((solver, n, s))
                if r is None:
                    cells.append("–")
                    continue
                v = f"{r['fd_mean']:.1f}"
                v = f"**{v}**" if r["fd_mean"] == best[n] else v
                if "vs_reference" in r:
                    p = r["vs_reference"]
                    v += f" ({p['mean']:+.1f} ± {p['ci95']:.1f})"
                cells.append(v)
            mid = by.get((solver, cols[len(cols) // 2], s))
            pr = f"{mid['precision_mean']:.2f} / {mid['recall_mean']:.2f}" if mid else "–"
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {pr} |")
        lines.append("")
    return "\n".join(lines)


def atomic_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="pifskit train run directory or checkpoint file")
    p.add_argument("--classifier", required=True, help="pifskit train-classifier output directory")
    p.add_argument("--data", required=True, help="data spec of the training data, e.g. mnist:DIR")
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (results.json, table.md)")
    p.add_argument("--nfe", default="5,10,20", help="comma-separated NFE budgets")
    p.add_argument("--solvers", default=",".join(SOLVERS))
    p.add_argument("--schedules", default="", help="only these schedules (comma-separated; pifskit always); "
                                                     "default: every baseline, pifskit and the --levels files")
    p.add_argument("--levels", action="append", default=[], metavar="NAME=FILE",
                   help="extra level lists (JSON with 'sigmas', e.g. `pifskit design steps --json`); repeatable")
    p.add_argument("--model-aware", action="store_true",
                   help="add 'pifskit-model': pifskit.design.trajectory on this model (the sampled EMA weights and "
                        "clamp), per solver and N; designs are cached in results.json under 'designs'")
    p.add_argument("--reference", default="pifskit", help="schedule of the paired differences (default pifskit)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n", type=int, default=250, help="samples per seed and cell")
    p.add_argument("--no-clip", dest="clip", action="store_false", help="do not clamp the x0 estimate to [-1, 1]")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    global REFERENCE
    REFERENCE = args.reference

    import torch

    from pifskit.torch.checkpoint import load_checkpoint_model
    from pifskit.torch.quality import classifier_features, frechet_distance, load_classifier, precision_recall

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, info = load_checkpoint_model(args.checkpoint, ema=not args.no_ema)
    schedule = get_schedule(info["schedule"])
    clf, clf_info = load_classifier(args.classifier)
    k = int(clf_info.get("k", 3))
    spec = parse_data_spec(args.data, args.holdout, args.split_seed)
    rec = clf_info["data"]
    if (rec.get("holdout"), rec.get("split_seed")) != (spec.holdout, spec.split_seed):
        raise SystemExit(f"the classifier was scored on holdout {rec.get('holdout')} / split seed "
                         f"{rec.get('split_seed')}; pass the same --holdout / --split-seed")
    train, held = spec.load()
    spectrum = from_data(train.images.reshape(len(train.images), -1), "pca(train split)")
    f_ref = classifier_features(clf, held.images)
    d = int(np.prod(info["image_shape"]))
    den = NumpyDenoiser(model, info["prediction_type"], schedule, info["image_shape"], args.clip, args.batch_size)

    res_path = out / "results.json"
    res = json.loads(res_path.read_text()) if res_path.exists() else {"cells": {}}
    if res.get("n") not in (None, args.n) or res.get("checkpoint_step") not in (None, info["step"]):
        raise SystemExit(f"{res_path} holds another setting (n {res.get('n')}, step {res.get('checkpoint_step')})")
    res.update({"checkpoint": str(args.checkpoint), "checkpoint_step": info["step"], "ema": not args.no_ema,
                "schedule": info["schedule"], "prediction": info["prediction_type"], "n": args.n,
                "n_seeds": args.seeds, "clip": args.clip, "n_ref": int(len(held)), "k": k,
                "spectrum": "PCA of the training split", "classifier": str(args.classifier)})
    if "floor" not in res:  # real vs real at n, one train subset per seed
        fl = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(1000 + seed)
            sub = train.images[rng.choice(len(train.images), size=min(args.n, len(train.images)), replace=False)]
            fs = classifier_features(clf, sub)
            pr = precision_recall(f_ref, fs, k)
            fl.append((frechet_distance(fs, f_ref), *pr))
        fl = np.asarray(fl)
        res["floor"] = {"fd": fl[:, 0].tolist(), "fd_mean": float(fl[:, 0].mean()),
                        "precision_mean": float(fl[:, 1].mean()), "recall_mean": float(fl[:, 2].mean())}
    extra = dict(read_levels(s) for s in args.levels)
    wanted = set(filter(None, args.schedules.split(","))) or None
    if wanted:
        wanted |= set(extra)
    cache: dict = {}
    x_T = {seed: np.random.default_rng(seed).standard_normal((args.n, d)) for seed in range(args.seeds)}
    t_all = time.perf_counter()
    for nfe in [int(v) for v in args.nfe.split(",")]:
        for solver in args.solvers.split(","):
            if solver not in SOLVERS:
                raise SystemExit(f"solver {solver!r}: one of {', '.join(SOLVERS)}")
            n_steps = steps_for_nfe(solver, nfe, schedule)
            levels = schedule_levels(schedule, spectrum, solver, n_steps, extra, wanted, cache)
            if args.model_aware:
                levels[MODEL_AWARE], levels["gits"] = model_aware_levels(res, den, d, schedule, solver, n_steps)
                atomic_json(res_path, res)
            if REFERENCE not in levels:
                raise SystemExit(f"--reference {REFERENCE!r} is not among the schedules of {solver}, N = {n_steps}")
            for name, sig in levels.items():
                chain = Chain.from_sigmas(sig, schedule, name=name)
                spent = sampler_nfe(solver, chain)
                if spent > nfe:
                    raise SystemExit(f"{solver} on {name}: {spent} NFE > budget {nfe}")
                for seed in range(args.seeds):
                    key = f"{solver}|{nfe}|{name}|{seed}"
                    if key in res["cells"]:
                        continue
                    t0 = time.perf_counter()
                    den.calls = 0
                    x = run_sampler(solver, den, chain, x_T[seed])
                    imgs = x.reshape((-1,) + tuple(info["image_shape"])).astype(np.float32)
                    fs = classifier_features(clf, imgs)
                    prec, rec_ = precision_recall(f_ref, fs, k)
                    res["cells"][key] = {"solver": solver, "nfe_budget": nfe, "steps": n_steps, "nfe": den.calls,
                                         "schedule": name, "seed": seed, "fd": frechet_distance(fs, f_ref),
                                         "precision": prec, "recall": rec_, "seconds": time.perf_counter() - t0,
                                         "sigmas": sig.tolist(),
                                         "outside_unit": float(np.mean(np.abs(x) > 1.0 + 1e-6))}
                    c = res["cells"][key]
                    print(f"{solver:8s} NFE {nfe:2d} ({n_steps} steps, {den.calls} evals) {name:16s} seed {seed}: "
                          f"FD {c['fd']:7.2f}  P {prec:.3f} R {rec_:.3f}  {c['seconds']:.1f} s", flush=True)
                    atomic_json(res_path, res)
    rows = summarise(res)
    res["summary"] = rows
    atomic_json(res_path, res)
    md = markdown(res, rows)
    (out / "table.md").write_text(md + "\n")
    print(md)
    print(f"total {time.perf_counter() - t_all:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
