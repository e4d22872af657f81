"""The sampling benchmark: every sampler x schedule x step count, scored against an exact data model.

Data (:func:`parse_bench_data`): ``gaussian:powerlaw:P`` / ``gaussian:digits`` (closed-form W2 and KL, no
sampling) and ``gmm:digits`` / ``gmm:mnist:PATH`` (Gaussian mixtures; Monte Carlo against fresh true samples:
sliced W2, unbiased MMD^2, mode coverage, bootstrap CIs). Every schedule spans the ``base_schedule``'s noise
range and starts from x_T ~ N(0, I); ``pifskit`` is :func:`pifskit.design.steps.optimal_steps` for the data's
pooled spectrum. Extra schedules: ``--levels`` (:func:`load_levels`); the limit: ``--oracle``
(:func:`optimise_oracle` on :func:`oracle_objective`). One seed fixes x_T for all configurations (common
random numbers: differences between schedules are paired), the references, projections and bootstrap.
Set-up and results: docs/benchmarks.md#sampling-benchmark-exact-score-data-models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ._json import fmt_num as _fmt
from ._validate import PifsError, check_choice, check_positive_int
from .chains import SPACINGS, Chain, make_chain, sigma_range
from .datasets import load_digits
from .exact_models import GaussianMixtureModel, GaussianModel
from .exact_models.fit import (DIGITS_JITTER, MNIST_JITTER, fit_gaussian, fit_mixture_em,
                              fit_mixture_per_class, mnist_data, pca_reduce)
from .metrics import (MetricValue, SlicedW2Reference, _exact, ci_from_replicates, gaussian_kl,
                       gaussian_output_moments, gaussian_w2, mmd2_unbiased, mode_coverage, paired_difference)
from .samplers import parse_sampler, sampler_nfe
from .schedules import Schedule, get_schedule
from .spectra import IMAGENET_PIXEL_VARIANCE, Spectrum, parse_spectrum

#: schedules the benchmark knows: the core spacings and pifskit's W2-optimal design
BENCH_SCHEDULES: tuple[str, ...] = tuple(SPACINGS) + ("pifskit",) + tuple(
    f"pifskit-{s}" for s in ("ddim", "euler", "heun", "dpmpp2m", "dpmpp3m", "ipndm"))  # solver-specific design
DEFAULT_SCHEDULES = ("trailing", "leading", "logsnr", "karras", "ays-sd15", "pifskit")
DEFAULT_SAMPLERS = ("ddim", "euler", "heun", "dpmpp2m")
DEFAULT_STEPS = (5, 10, 20, 50)
#: samples per configuration and bootstrap replicates by default: the README tour (4 samplers x 6 schedules x
#: 3 step counts) in well under a minute; the tables in docs/benchmarks.md use --samples 10000 --n-boot 100
DEFAULT_SAMPLES = 1000
DEFAULT_N_BOOT = 50


@dataclass
class BenchData:
    """A data model to benchmark on, with the pooled spectrum the 'pifskit' schedule is designed for."""

    model: GaussianModel | GaussianMixtureModel
    name: str
    spectrum: Spectrum
    info: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "gaussian" if isinstance(self.model, GaussianModel) else "gmm"


def parse_bench_data(spec: str, *, dim: int | None = None, fit: str = "class", components: int = 10,
                     jitter: float | None = None, seed: int = 0, resolution: int = 64, channels: int = 3,
                     pixel_variance: float = IMAGENET_PIXEL_VARIANCE) -> BenchData:
    """``gaussian:powerlaw:P`` | ``gaussian:digits`` | ``gmm:digits`` | ``gmm:mnist:PATH`` -> :class:`BenchData`.

    ``jitter=None`` uses the data's dequantisation variance (digits 1.3e-3, MNIST 5.1e-6).
    """
    kind, _, rest = spec.partition(":")
    check_choice(kind, "data model", ("gaussian", "gmm"))
    src, _, arg = rest.partition(":")
    check_choice(fit, "mixture fit", ("class", "em"))
    if kind == "gaussian":
        check_choice(src, "gaussian data", ("powerlaw", "digits"))
        if src == "powerlaw":
            spec_ = parse_spectrum(f"powerlaw:{arg}", resolution, channels, pixel_variance)
            model = GaussianModel.diagonal(spec_.eigenvalues, name=spec_.name)
            return BenchData(model, f"gaussian {spec_.name}", spec_, {"d": model.d, "pixel_variance": pixel_variance})
        X, _ = load_digits().rows()
        jit = DIGITS_JITTER if jitter is None else jitter
        if dim is not None:
            X, _ = pca_reduce(X, dim)
        model = fit_gaussian(X, jitter=jit, name="gaussian fit to digits")
        return BenchData(model, model.name, Spectrum(model.eigen_coordinates()[0], name="digits"),
                         {"d": model.d, "jitter": jit, "n": int(X.shape[0])})
    check_choice(src, "mixture data", ("digits", "mnist"))
    if src == "digits":
        X, y = load_digits().rows()
        jit = DIGITS_JITTER if jitter is None else jitter
        label = "digits 8x8"
    else:
        if not arg:
            raise PifsError("gmm:mnist needs the directory of the MNIST IDX files: gmm:mnist:PATH")
        X, y = mnist_data(arg)
        jit = MNIST_JITTER if jitter is None else jitter
        label = "MNIST"
        dim = 64 if dim is None else dim
    info = {"n": int(X.shape[0]), "jitter": float(jit), "fit": fit}
    if dim is not None and dim != X.shape[1]:
        X, pca = pca_reduce(X, dim)
        info["pca_dim"] = int(dim)
        info["pca_variance_kept"] = float(pca.variances.sum())
        label += f" (PCA {dim})"
    if fit == "class":
        model = fit_mixture_per_class(X, y, jitter=jit, name=f"gmm per class, {label}")
    else:
        model = fit_mixture_em(X, components, jitter=jit, seed=seed, name=f"gmm EM {components}, {label}")
    info.update({"d": model.d, "K": model.K})
    pooled = np.linalg.eigvalsh(model.moments()[1])  # the 'pifskit' schedule's spectrum: the pooled covariance
    return BenchData(model, model.name, Spectrum(np.clip(pooled, 0.0, None), name=label), info)


def bench_chain(name: str, steps: int, schedule: Schedule, spectrum: Spectrum | None = None) -> Chain:
    """The chain of ``steps`` steps that schedule ``name`` runs on the training ``schedule``.

    'pifskit': the W2-optimal levels of :func:`pifskit.design.steps.optimal_steps` for ``spectrum``
    (N noisy levels, then clean; DDIM's criterion, N(0, I) start); 'pifskit-SOLVER': the same designed
    for that solver's closed form; ImportError if the design module is missing.
    """
    check_choice(name, "schedule", BENCH_SCHEDULES)
    N = check_positive_int(steps, "steps")
    if not name.startswith("pifskit"):
        return make_chain(schedule, N, name)
    from .design.steps import optimal_steps  # lazy: the design module is optional here

    if spectrum is None:
        raise PifsError("the 'pifskit' schedule needs the data spectrum")
    solver = name.partition("-")[2] or "ddim"
    return optimal_steps(schedule, spectrum, N, solver=solver).chain


def _batched(sampler: Callable, denoiser, chain: Chain, x_T: np.ndarray, rng, opts: dict, batch: int) -> np.ndarray:
    """The one place the benchmark calls a sampler: ``x_T`` in row batches of ``batch``."""
    out = np.empty_like(x_T)
    for i in range(0, x_T.shape[0], batch):
        sl = slice(i, min(i + batch, x_T.shape[0]))
        out[sl] = sampler(denoiser, x_T[sl], chain, rng=rng, **opts)
    return out


#: what ``--levels NAME=FILE`` reads (shown by the CLI's --help)
LEVELS_CONTRACT = (
    "FILE is JSON: the output of `pifskit design steps --json` (its 'sigmas' are used: N noisy VE levels, "
    "strictly decreasing, then 0; a 'solver' field is kept in the label as NAME[solver]), or {\"sigmas\": [...]} "
    "(a missing final 0 is added), or one such object per step count keyed by N: {\"5\": {...}, \"10\": {...}}. "
    "N = the number of noisy levels; a single design must have an N among --steps, a keyed file is used at the "
    "--steps it has. Levels are VE sigmas of --base-schedule's VP process (what `pifskit design steps` prints for a "
    "VP schedule); the chain starts from x_T ~ N(0, I) (VP) at its first level like every other schedule. "
    "--reference NAME makes it the schedule the paired differences are taken to.")


def _levels_entry(obj, where: str) -> tuple[np.ndarray, str | None]:
    if not isinstance(obj, dict) or "sigmas" not in obj:
        raise PifsError(f"{where}: expected an object with 'sigmas' (pifskit design steps --json), "
                        "or one such object per step count keyed by N")
    try:
        sig = np.asarray(obj["sigmas"], dtype=np.float64)
    except (TypeError, ValueError):
        raise PifsError(f"{where}: 'sigmas' must be a list of numbers") from None
    if sig.ndim != 1 or sig.size == 0 or not np.isfinite(sig).all():
        raise PifsError(f"{where}: 'sigmas' must be a non-empty list of finite numbers")
    if sig[-1] != 0.0:
        sig = np.append(sig, 0.0)
    if (sig[:-1] <= 0).any() or not (np.diff(sig) < 0).all():
        raise PifsError(f"{where}: 'sigmas' must be positive and strictly decreasing (then 0)")
    solver = obj.get("solver")
    return sig, (str(solver) if solver else None)


def load_levels(name: str, path, steps) -> tuple[str, dict[int, Chain]]:
    """``--levels NAME=FILE`` -> (label, {N: chain}) (format: ``LEVELS_CONTRACT``)."""
    import json

    if not name or any(c in name for c in ",=[]") or name in BENCH_SCHEDULES or name == "oracle":
        raise PifsError(f"--levels name {name!r} must be non-empty, without ',=[]', and not a built-in schedule")
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PifsError(f"--levels {name}: file {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PifsError(f"--levels {name}: cannot read {path} as JSON ({exc.__class__.__name__})") from None
    steps = [int(s) for s in steps]
    if isinstance(obj, dict) and "sigmas" not in obj and obj and all(str(k).strip().isdigit() for k in obj):
        entries = {}
        for k, v in obj.items():
            sig, solver = _levels_entry(v, f"--levels {name} ({path}) key {k!r}")
            if sig.size - 1 != int(k):
                raise PifsError(f"--levels {name} ({path}): key {k!r} holds {sig.size - 1} noisy levels")
            entries[int(k)] = (sig, solver)
        keyed = True
    else:
        sig, solver = _levels_entry(obj, f"--levels {name} ({path})")
        entries, keyed = {sig.size - 1: (sig, solver)}, False
    used = {N: e for N, e in entries.items() if N in steps}
    if not used:
        have = ", ".join(map(str, sorted(entries)))
        raise PifsError(f"--levels {name} ({path}): N = {have} noisy levels, none among --steps "
                        f"{','.join(map(str, steps))}" + ("" if keyed else " (key the file by N for several)"))
    solvers = {s for _, s in used.values() if s}
    label = name + (f"[{'/'.join(sorted(solvers))}]" if solvers else "")
    return label, {N: Chain.from_sigmas(sig, name=label) for N, (sig, _) in used.items()}


#: the oracle's defaults: coordinate-search evaluations per (sampler, N) and its optimisation sample size
ORACLE_BUDGET = 100
ORACLE_SAMPLES = 1000
ORACLE_PROJECTIONS = 64


@dataclass
class OracleResult:
    """The oracle's levels for one (sampler, N) and the record of its search (values on the optimisation sample)."""

    chain: Chain
    start_schedule: str
    start_value: float
    value: float
    evaluations: int
    seconds: float
    history: list[float]
    bounds: tuple[float, float]


def oracle_objective(model, sampler: Callable, opts: dict, *, n: int, seed: int, sampler_key: int = 0,
                     n_projections: int = ORACLE_PROJECTIONS, batch: int = 4096) -> Callable[[Chain], float]:
    """SW2 of the sampler's output on a fixed optimisation sample: common random numbers.

    x_T, the true reference sample and the unit projections are drawn once from the streams
    ``[seed, 7, 0]``, ``[seed, 7, 1]``, ``[seed, 7, 2]`` (the evaluation uses ``[seed, 0..6]``: a
    separate sample), the sampler's own noise (eta > 0) is reset to ``[seed, 7, 3, sampler_key]`` on each
    call, so the objective is a deterministic function of the levels.
    """
    x_T = np.random.default_rng([seed, 7, 0]).standard_normal((n, model.d))
    ref = model.sample(n, np.random.default_rng([seed, 7, 1]))
    sw = SlicedW2Reference(ref, n_projections, 1, np.random.default_rng([seed, 7, 2]))

    def f(chain: Chain) -> float:
        X = _batched(sampler, model.denoise, chain, x_T, np.random.default_rng([seed, 7, 3, sampler_key]), opts,
                     batch)
        return float(sw.compare(X)[0]) if np.isfinite(X).all() else float("inf")

    f.x_T = x_T  # the optimisation sample, exposed for checks
    return f


def _chain_of(log_sigmas: np.ndarray, name: str) -> Chain:
    return Chain.from_sigmas(np.append(np.exp(log_sigmas), 0.0), name=name)


def optimise_oracle(objective: Callable[[Chain], float], starts: dict[str, Chain], sigma_range_: tuple[float, float],
                    *, budget: int = ORACLE_BUDGET, step: float = 0.3, tol: float = 0.005,
                    progress: Callable[[int], None] | None = None) -> OracleResult:
    """Levels minimising ``objective`` by coordinate search in log sigma, from the best (finite) of ``starts``.

    All N noisy levels u_k = log sigma_k are free, strictly decreasing inside [sigma_min, sigma_max] (widened
    to hold the start), then a step to 0. Per sweep each u_k is tried at u_k + delta, else u_k - delta (an
    order-breaking move goes halfway to the neighbour), an improvement kept at once; delta starts at ``step`` x
    the start's mean log-sigma gap and halves after a sweep without improvement. Stops at ``budget``
    evaluations (starts included) or delta < ``tol``; never worse than the start on the objective's sample.
    """
    t0 = time.perf_counter()
    advance = progress or (lambda k=1: None)
    budget = check_positive_int(budget, "oracle budget")
    starts = {k: c for k, c in starts.items() if np.isfinite(c.sigmas).all()}
    if not starts:
        raise PifsError("the oracle needs at least one start schedule with finite noise levels")
    scored = {}
    for name, ch in starts.items():
        scored[name] = objective(ch)
        advance(1)
    evals = len(scored)
    start = min(scored, key=lambda k: scored[k])
    best = float(scored[start])
    sig = starts[start].sigmas
    u = np.log(sig[:-1] if sig[-1] == 0.0 else sig)
    lo = min(np.log(sigma_range_[0]), float(u.min()))
    hi = max(np.log(sigma_range_[1]), float(u.max()))
    history = [best]
    delta = float(step) * (float(u[0] - u[-1]) / max(u.size - 1, 1) if u.size > 1 else 1.0)
    while evals < budget and delta >= tol:
        improved = False
        for k in range(u.size):
            up = hi if k == 0 else u[k - 1]
            down = lo if k == u.size - 1 else u[k + 1]
            for sgn in (1.0, -1.0):
                if evals >= budget:
                    break
                v = u[k] + sgn * delta
                bound = up if sgn > 0 else down
                closed = (k == 0 and sgn > 0) or (k == u.size - 1 and sgn < 0)  # range ends may be reached
                if (v > bound if sgn > 0 else v < bound) or (not closed and v == bound):
                    v = bound if closed else 0.5 * (u[k] + bound)
                if v == u[k]:
                    continue
                trial = u.copy()
                trial[k] = v
                val = objective(_chain_of(trial, "oracle"))
                evals += 1
                advance(1)
                if val < best:
                    u, best, improved = trial, float(val), True
                    history.append(best)
                    break
        if not improved:
            delta *= 0.5
    advance(max(budget - evals, 0))  # the unused budget, so a bar sized by the budget completes
    return OracleResult(_chain_of(u, "oracle"), start, float(scored[start]), best, evals,
                        time.perf_counter() - t0, history, (float(np.exp(lo)), float(np.exp(hi))))


def _ci(mv: MetricValue) -> dict:
    return {"value": mv.value, "ci_low": mv.ci_low, "ci_high": mv.ci_high}


def run_sampling_benchmark(data: BenchData, samplers=DEFAULT_SAMPLERS, steps=DEFAULT_STEPS,
                           schedules=DEFAULT_SCHEDULES, n_samples: int = DEFAULT_SAMPLES, seed: int = 0,
                           base_schedule: str = "sd", batch_size: int = 4096, n_boot: int = DEFAULT_N_BOOT,
                           n_projections: int = 128, mmd_samples: int = 1000, paired: bool = True,
                           progress: Callable[[int], None] | None = None,
                           levels: dict[str, dict[int, Chain]] | None = None, oracle: bool = False,
                           oracle_budget: int = ORACLE_BUDGET, oracle_samples: int = ORACLE_SAMPLES,
                           reference: str | None = None) -> dict:
    """Run the grid and return the report: ``results`` (a row per sampler/schedule/steps/metric), ``floor`` (a
    second true sample set's metrics: the noise floor), and for mixtures ``paired`` (SW2 minus the ``reference``
    schedule's -- default 'pifskit' if run, else the first; a ``levels`` label or its bare name -- on the same
    x_T, paired bootstrap CI, negative = better) and ``versus_best`` (the reference minus the best other
    non-oracle schedule); ``chains``, ``timing`` and the settings.

    ``levels``: extra schedules {label: {N: chain}} (:func:`load_levels`). ``oracle`` (mixtures): per sampler
    and N, :func:`optimise_oracle` on :func:`oracle_objective` (``oracle_samples`` rows separate from the
    evaluation's, ``oracle_budget`` evaluations) from the cell's schedules, scored like every schedule (row
    'oracle'); ``oracle_gap`` holds each schedule's SW2 minus the oracle's, ``oracle`` the search records."""
    n = check_positive_int(n_samples, "samples")
    batch = check_positive_int(batch_size, "batch size")
    if not samplers or not steps or not schedules:
        raise PifsError("need at least one sampler, one step count and one schedule")
    parsed = [parse_sampler(s) for s in samplers]
    steps = [check_positive_int(int(s), "steps") for s in steps]
    for s in schedules:
        check_choice(s, "schedule", BENCH_SCHEDULES)
    levels = dict(levels or {})
    if oracle and data.kind != "gmm":
        raise PifsError("--oracle needs a mixture data model (gmm:...): on a Gaussian the metric is closed form "
                        "and the solver-specific pifskit design is its optimum")
    if oracle:
        oracle_budget = check_positive_int(oracle_budget, "oracle budget")
        oracle_samples = check_positive_int(oracle_samples, "oracle samples")
        if oracle_samples < 2:
            raise PifsError("--oracle-samples must be >= 2")
    sched = get_schedule(base_schedule)
    smin, smax = sigma_range(sched)
    chains: dict[tuple[str, int], Chain] = {}
    for sc in schedules:
        for N in steps:
            chains[(sc, N)] = bench_chain(sc, N, sched, data.spectrum)
    chains.update({(label, N): ch for label, by_n in levels.items() for N, ch in by_n.items() if N in steps})
    advance = progress or (lambda k=1: None)
    model = data.model
    results: list[dict] = []
    floor: list[dict] = []
    paired_rows: list[dict] = []
    gap_rows: list[dict] = []
    best_rows: list[dict] = []
    oracle_rows: list[dict] = []
    t_sample, t_metrics, n_generated = 0.0, 0.0, 0

    def add(label, sc, N, nfe, metric, mv):
        results.append({"sampler": label, "schedule": sc, "steps": N, "nfe": nfe, "metric": metric, **_ci(mv)})

    if data.kind == "gaussian":
        for (sc, N), chain in chains.items():
            for label, fn, opts in parsed:
                out = gaussian_output_moments(model, fn, chain, start="prior", **opts)
                nfe = sampler_nfe(label, chain)
                add(label, sc, N, nfe, "w2", _exact(gaussian_w2(out)))
                add(label, sc, N, nfe, "kl", _exact(gaussian_kl(out)))
                advance(1)
    else:
        x_T = np.random.default_rng([seed, 0]).standard_normal((n, model.d))  # the N(0, I) prior, shared by all
        ref = model.sample(n, np.random.default_rng([seed, 1]))
        ref2 = model.sample(n, np.random.default_rng([seed, 2]))

        # one reference for every configuration: the same projections and resamples ([seed, 3]) for all,
        # so the replicates of two schedules are paired and the paired difference costs nothing extra
        sw_ref = SlicedW2Reference(ref, n_projections, n_boot, np.random.default_rng([seed, 3]))

        def score(X):
            est, reps = sw_ref.compare(X)
            sw = MetricValue(est, *ci_from_replicates(est, reps))
            mmd = mmd2_unbiased(X, ref, max_n=mmd_samples, n_boot=n_boot, rng=np.random.default_rng([seed, 4]))
            tv, _ = mode_coverage(model, X, n_boot, np.random.default_rng([seed, 5]))
            return {"sw2": sw, "mmd2": mmd, "mode_tv": tv}, (est, reps)

        fl, _ = score(ref2)
        floor = [{"metric": k, **v.to_dict()} for k, v in fl.items()]
        scheds_run = list(dict.fromkeys(sc for sc, _ in chains))
        if reference is not None:
            names = {sc: sc for sc in scheds_run} | {sc.partition("[")[0]: sc for sc in levels}
            check_choice(reference, "reference schedule", names)
            reference = names[reference]
        else:
            reference = "pifskit" if "pifskit" in scheds_run else (scheds_run[0] if scheds_run else None)
        for j, (label, fn, opts) in enumerate(parsed):
            objective = (oracle_objective(model, fn, opts, n=oracle_samples, seed=seed, sampler_key=j,
                                          batch=batch) if oracle else None)
            for N in steps:
                kept: dict[str, tuple[float, np.ndarray]] = {}
                cell = {sc: chains[(sc, N)] for sc in scheds_run if (sc, N) in chains}
                if oracle and cell:
                    orc = optimise_oracle(objective, cell, (smin, smax), budget=oracle_budget, progress=advance)
                    fields = ("start_schedule", "start_value", "value", "evaluations", "seconds", "history")
                    oracle_rows.append({"sampler": label, "steps": N, **{k: getattr(orc, k) for k in fields},
                                        "bounds": list(orc.bounds), "sigmas": orc.chain.sigmas.tolist()})
                    cell["oracle"] = orc.chain
                for sc, chain in cell.items():
                    t0 = time.perf_counter()
                    X = _batched(fn, model.denoise, chain, x_T, np.random.default_rng([seed, 6, j]), opts, batch)
                    t_sample += time.perf_counter() - t0
                    n_generated += n
                    if not np.isfinite(X).all():
                        raise PifsError(f"sampler {label} on schedule {sc} ({N} steps) produced non-finite samples")
                    t0 = time.perf_counter()
                    ms, kept[sc] = score(X)
                    t_metrics += time.perf_counter() - t0
                    nfe = sampler_nfe(label, chain)
                    for k, mv in ms.items():
                        add(label, sc, N, nfe, k, mv)
                    advance(1)
                if paired and reference in kept:
                    for sc, sw in kept.items():
                        if sc == reference:
                            continue
                        paired_rows.append({"sampler": label, "schedule": sc, "reference": reference, "steps": N,
                                            "metric": "sw2_minus_reference",
                                            **_ci(paired_difference(sw, kept[reference]))})
                    others = [sc for sc in kept if sc not in (reference, "oracle")]
                    if others:
                        bo = min(others, key=lambda sc: kept[sc][0])
                        best_rows.append({"sampler": label, "schedule": reference, "best_other": bo, "steps": N,
                                          "metric": "sw2_reference_minus_best_other",
                                          **_ci(paired_difference(kept[reference], kept[bo]))})
                if "oracle" in kept:
                    for sc, sw in kept.items():
                        gap_rows.append({"sampler": label, "schedule": sc, "steps": N, "metric": "sw2_minus_oracle",
                                         **_ci(paired_difference(sw, kept["oracle"]))})
    return {
        "data": {"spec": data.name, "kind": data.kind, **data.info},
        "settings": {"samplers": [p[0] for p in parsed], "steps": steps, "schedules": list(schedules),
                     "samples": n, "seed": seed, "base_schedule": base_schedule, "n_boot": n_boot,
                     "n_projections": n_projections, "mmd_samples": mmd_samples,
                     "start": "x_T ~ N(0, I) at the first level",
                     "kl_direction": "KL(sampler || data)",
                     "levels": sorted(levels),
                     **({"oracle": {"budget": oracle_budget, "samples": oracle_samples,
                                    "projections": ORACLE_PROJECTIONS, "objective": "sliced W2 (no bootstrap)",
                                    "optimisation_seed": [seed, 7], "evaluation_seed": [seed, 0],
                                    "method": "coordinate search in log sigma from the best schedule of the cell",
                                    "start_level": "free in [sigma_min, sigma_max] (like every schedule, x_T ~ "
                                                   "N(0, I) at the first level); last step to sigma = 0"}}
                        if oracle else {})},
        "noise_range": {"sigma_min": smin, "sigma_max": smax,
                        "sqrt_lambda_max": float(np.sqrt(data.spectrum.eigenvalues[0])),
                        "sqrt_lambda_min": float(np.sqrt(data.spectrum.eigenvalues[-1]))},
        "results": results,
        "floor": floor,
        "paired": paired_rows,
        "versus_best": best_rows,
        "oracle_gap": gap_rows,
        "oracle": oracle_rows,
        "chains": [{"schedule": sc, "steps": N, "sigmas": ch.sigmas.tolist()} for (sc, N), ch in chains.items()]
        + [{"schedule": "oracle", **{k: r[k] for k in ("sampler", "steps", "sigmas")}} for r in oracle_rows],
        "timing": {"sampling_seconds": t_sample, "metrics_seconds": t_metrics, "samples_generated": n_generated,
                   "samples_per_second": (n_generated / t_sample) if t_sample > 0 else None},
    }


def _pm(r: dict) -> str:
    """A signed difference with its interval: +v [+lo, +hi]."""
    return f"{r['value']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"


def _grid(rows: list[dict], by: tuple[str, ...], steps: list[int], cell: Callable[[dict], str]) -> list[str]:
    """A markdown table of ``rows``: one row per distinct ``by`` key (first-seen order), one column per step count."""
    tab = {(*(r[k] for k in by), r["steps"]): r for r in rows}
    lines = ["| " + " | ".join(by) + " | " + " | ".join(f"{N} steps" for N in steps) + " |",
             "|---" * len(by) + "|" + "---|" * len(steps)]
    for key in dict.fromkeys(tuple(r[k] for k in by) for r in rows):
        cells = ["" if (*key, N) not in tab else cell(tab[(*key, N)]) for N in steps]
        lines.append("| " + " | ".join(key) + " | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown_tables(report: dict) -> str:
    """One table per metric: rows sampler x schedule, columns step counts; best value per sampler and column
    in bold; then the paired differences and the throughput."""
    res = report["results"]
    st = report["settings"]
    lines = [f"# Sampling benchmark: {report['data']['spec']}", ""]
    nr = report["noise_range"]
    lines += [f"Noise range sigma {nr['sigma_min']:.4g} .. {nr['sigma_max']:.4g} ({st['base_schedule']}); "
              f"data sqrt(lambda) {nr['sqrt_lambda_min']:.3g} .. {nr['sqrt_lambda_max']:.3g}; "
              f"{st['samples']} samples per configuration, seed {st['seed']}"
              + (f"; 95% CIs from {st['n_boot']} bootstrap replicates." if report["data"]["kind"] == "gmm"
                 else "; closed form."), ""]
    steps = sorted({r["steps"] for r in res})
    floor = {f["metric"]: f for f in report.get("floor", [])}
    for m in dict.fromkeys(r["metric"] for r in res):
        rows = [r for r in res if r["metric"] == m]
        s_order = {v: i for i, v in enumerate(dict.fromkeys(r["sampler"] for r in rows))}
        rows.sort(key=lambda r: s_order[r["sampler"]])
        best: dict[tuple, float] = {}
        for r in rows:
            best[(r["sampler"], r["steps"])] = min(r["value"], best.get((r["sampler"], r["steps"]), np.inf))

        def cell(r: dict) -> str:
            txt = _fmt(r["value"])
            if r["ci_low"] != r["ci_high"]:
                txt += f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
            return f"**{txt}**" if r["value"] == best[(r["sampler"], r["steps"])] else txt

        lines += [f"## {m}" + (" (95% bootstrap CI)" if rows and rows[0]["ci_low"] != rows[0]["ci_high"] else ""), ""]
        if m in floor:
            f = floor[m]
            lines += [f"Noise floor (a second true sample set): {_fmt(f['value'])} [{_fmt(f['ci_low'])}, "
                      f"{_fmt(f['ci_high'])}]", ""]
        lines += _grid(rows, ("sampler", "schedule"), steps, cell)
    pr = report.get("paired") or []
    if pr:
        ref = pr[0]["reference"]
        lines += [f"## Paired SW2 difference to '{ref}' (same x_T; 95% paired bootstrap CI; negative = better than "
                  f"{ref})", ""] + _grid(pr, ("sampler", "schedule"), steps, _pm)
    vb = report.get("versus_best") or []
    if vb:
        lines += [f"## '{vb[0]['schedule']}' minus the best other schedule (SW2; same x_T; 95% paired bootstrap CI; "
                  "<= 0 or an interval holding 0 = best or tied; the oracle excluded)", ""]
        lines += _grid(vb, ("sampler",), steps, lambda r: f"{_pm(r)} vs {r['best_other']}")
    og = report.get("oracle_gap") or []
    if og:
        o = st["oracle"]
        lines += ["## Distance to the oracle (SW2 minus the oracle's; same x_T; 95% paired bootstrap CI; the number "
                  "to drive to zero)", "",
                  f"The oracle: per sampler and step count, levels optimised on the bench's own metric (sliced W2, "
                  f"{o['projections']} fixed directions) with the exact denoiser and that sampler, on a separate "
                  f"optimisation sample ({o['samples']} rows, seed {o['optimisation_seed']}; common random numbers), "
                  f"by {o['method']}, at most {o['budget']} evaluations; start level {o['start_level']}. It is scored "
                  "here on the evaluation sample like every schedule, so sampling noise can put a schedule below it "
                  "(a negative distance).", ""]
        lines += _grid([r for r in og if r["schedule"] != "oracle"], ("sampler", "schedule"), steps, _pm)
        lines += ["Oracle searches (SW2 on the optimisation sample):", "",
                  "| sampler | steps | start (best schedule) | start SW2 | oracle SW2 | evaluations | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for r in report.get("oracle", []):
            lines.append(f"| {r['sampler']} | {r['steps']} | {r['start_schedule']} | {_fmt(r['start_value'])} | "
                         f"{_fmt(r['value'])} | {r['evaluations']} | {r['seconds']:.1f} |")
        lines.append("")
    t = report.get("timing", {})
    if t.get("samples_per_second"):
        lines += [f"Sampling throughput: {t['samples_per_second']:.0f} samples/s "
                  f"({t['samples_generated']} samples in {t['sampling_seconds']:.1f} s).", ""]
    return "\n".join(lines)


def write_report(report: dict, out_dir, plots: bool = True) -> list[Path]:
    """Write report.json, report.html, results.md and the plots into ``out_dir`` (created); return the paths.

    The page is :func:`pifskit.report.exact_bench.write_bench_report` (the one report writer)."""
    from .report.exact_bench import write_bench_report

    return write_bench_report(report, out_dir, markdown_tables(report), plots=plots)
