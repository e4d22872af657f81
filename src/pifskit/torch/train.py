"""Plain PyTorch training loop for the small denoisers; runs unchanged under ``torchrun``.

Distributed: when ``WORLD_SIZE > 1`` is in the environment the loop calls
``torch.distributed.init_process_group`` (NCCL on GPU, gloo on CPU), wraps the model
in ``DistributedDataParallel`` and shards every global batch with a
``DistributedSampler``; rank 0 alone logs and writes checkpoints.

Exact resume: everything random is a function of (seed, step, rank), never of an
iterator's state -- the batch is slice ``step % steps_per_epoch`` of the
DistributedSampler's permutation for epoch ``step // steps_per_epoch``, and the
noise / timesteps (and the global torch RNG, which the PIFS regulariser may use)
are seeded from ``SeedSequence([seed, step, rank])``. The learning rate is a
function of the step. So a run stopped after k steps and resumed reproduces the
uninterrupted run bit for bit on CPU (same thread count).

Loss (per sample, in the prediction's own units): ``w(t) * mean((model(x_t, t) - target)^2)``,
x_t = a_t x0 + s_t eps, with ``w`` one of

* uniform: w = 1;
* min-snr (Hang et al. 2023): x0 units min(SNR, gamma); epsilon min(SNR, gamma)/SNR;
  v min(SNR, gamma)/(SNR + 1);
* geometric (theory section 6 II): the per-timestep weights of ``pifskit.design.weighting``
  for the training data's spectrum.

plus ``reg_weight * R`` with R the PIFS regulariser of ``pifskit.torch.regularizer`` (on a
``reg_steps``-step DDIM chain of the training schedule, budget L*_t (1 + reg_margin)).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .._validate import PifsError, check_choice, check_positive_int
from ..datasets import DataSpec, ImageDataset
from ..schedules import DiscreteSchedule, get_schedule
from .checkpoint import CHECKPOINT_NAME, atomic_write_bytes, load_checkpoint, rng_state, save_checkpoint
from .models import (build_model, count_parameters, default_config, normalize_prediction,
                     training_target)

__all__ = ["TrainConfig", "train", "WEIGHTINGS", "PRECISIONS", "loss_weights", "min_snr_weights",
           "geometric_weights", "batch_indices", "step_seed", "build_regularizer", "LOG_NAME"]

WEIGHTINGS = ("uniform", "min-snr", "geometric")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LOG_NAME = "log.jsonl"
#: hyper-parameters that may change on resume (they do not alter the optimisation path's definition)
RESUMABLE_CHANGES = ("precision",)


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (everything except the data, the step budget and I/O cadence)."""

    model: str = "dit"
    prediction: str = "epsilon"
    schedule: str = "cosine-discrete"
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    weighting: str = "uniform"
    gamma: float = 5.0
    reg_weight: float = 0.0
    reg_steps: int = 10
    reg_margin: float = 0.0
    reg_blocks: int = 1  # the regulariser's own default probe budget (<= 1.5x step cost)
    reg_fraction: float = 0.125
    reg_patch: int = 4
    precision: str = "auto"
    model_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        check_choice(self.model, "model", ("dit", "unet"))
        self.prediction = normalize_prediction(self.prediction)
        check_positive_int(self.batch_size, "batch_size")
        check_choice(self.weighting, "weighting", WEIGHTINGS)
        check_choice(self.precision, "precision", PRECISIONS)
        for k in ("lr", "gamma"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise PifsError(f"{k} must be a positive number, got {v!r}")
        for k in ("weight_decay", "reg_weight", "grad_clip"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise PifsError(f"{k} must be a non-negative number, got {v!r}")
        if not (0.0 <= self.ema_decay < 1.0):
            raise PifsError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.warmup < 0:
            raise PifsError(f"warmup must be >= 0, got {self.warmup}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# ---------------------------------------------------------------------------
# determinism helpers
# ---------------------------------------------------------------------------

def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed that depends only on (seed, step, rank)."""
    return int(np.random.SeedSequence([int(seed), int(step), int(rank)]).generate_state(2, np.uint64)[0] >> 1)


class _BatchPlan:
    """Batch indices as a function of (seed, step): DistributedSampler permutation per epoch."""

    def __init__(self, n: int, batch_size: int, seed: int, world: int, rank: int):
        from torch.utils.data.distributed import DistributedSampler

        if batch_size % world:
            raise PifsError(f"batch_size {batch_size} must be divisible by the world size {world}")
        self.local = batch_size // world
        self.sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed,
                                          drop_last=True)
        self.per_epoch = len(self.sampler) // self.local
        if self.per_epoch < 1:
            raise PifsError(f"batch_size {batch_size} exceeds the {n} training images")
        self._epoch, self._idx = -1, None

    def __call__(self, step: int) -> np.ndarray:
        epoch, j = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._idx = np.fromiter(iter(self.sampler), dtype=np.int64)
            self._epoch = epoch
        return self._idx[j * self.local:(j + 1) * self.local]


def batch_indices(n: int, batch_size: int, seed: int, step: int, world: int = 1, rank: int = 0) -> np.ndarray:
    """The training-set indices rank ``rank`` uses at ``step`` (pure function of its arguments)."""
    return _BatchPlan(n, batch_size, seed, world, rank)(step)


def lr_at(step: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then constant."""
    return lr * min(1.0, (step + 1) / warmup) if warmup > 0 else lr


# ---------------------------------------------------------------------------
# loss weights
# ---------------------------------------------------------------------------

def min_snr_weights(alphas_cumprod: np.ndarray, prediction: str, gamma: float) -> np.ndarray:
    """Min-SNR-gamma per timestep in the prediction's units (x0: min(SNR, g); eps: /SNR; v: /(SNR+1))."""
    ab = np.asarray(alphas_cumprod, dtype=np.float64)
    with np.errstate(divide="ignore"):
        snr = ab / (1.0 - ab)
    w_x0 = np.minimum(snr, gamma)
    if prediction == "sample":
        return w_x0
    if prediction == "epsilon":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(np.isinf(snr), 0.0, w_x0 / snr)
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(snr), 0.0, w_x0 / (snr + 1.0))


def geometric_weights(schedule: DiscreteSchedule, prediction: str, data: ImageDataset) -> np.ndarray:
    """Per-timestep weights of the geometric weighting (theory 6 II), ``pifskit.design.weighting.loss_weights``
    at the schedule's logSNR table for the PCA spectrum of the training images (normalised so the
    epsilon weight -> 1 at pure noise)."""
    try:
        from ..design.weighting import loss_weights as design_loss_weights
    except ImportError:
        raise PifsError("--weighting geometric needs pifskit.design.weighting, which this build lacks; "
                        "use uniform or min-snr") from None
    from ..spectra import from_data

    spectrum = from_data(data.images.reshape(len(data), -1).astype(np.float64), name=data.name)
    short = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}[prediction]
    w = np.asarray(design_loss_weights(schedule.logsnr_table, spectrum, prediction=short), dtype=np.float64)
    if w.shape != (schedule.num_train_timesteps,) or not np.isfinite(w).all() or (w < 0).any():
        raise PifsError(f"geometric weights must be finite, >= 0, shape ({schedule.num_train_timesteps},)")
    return w


def loss_weights(config: TrainConfig, schedule: DiscreteSchedule, data: ImageDataset) -> np.ndarray:
    if config.weighting == "uniform":
        return np.ones(schedule.num_train_timesteps)
    if config.weighting == "min-snr":
        return min_snr_weights(schedule.alphas_cumprod, config.prediction, config.gamma)
    return geometric_weights(schedule, config.prediction, data)


# ---------------------------------------------------------------------------
# the PIFS regulariser (pifskit.torch.regularizer)
# ---------------------------------------------------------------------------

def build_regularizer(model: nn.Module, model_cfg: dict, schedule: DiscreteSchedule, cfg: "TrainConfig",
                      image_shape: tuple[int, int, int]):
    """(regulariser, chain denoiser): R of ``pifskit.torch.regularizer.PIFSRegularizer`` on the
    ``reg_steps``-step trailing DDIM chain of the training schedule, over the DiT's patches
    (U-Net: ``reg_patch``), budget L*_t (1 + ``reg_margin``)."""
    try:
        from ..chains import make_chain
        from .adapter import ChainDenoiser, ModelDenoiser
        from .blocks import Partition
        from .regularizer import PIFSRegularizer
    except ImportError as exc:
        raise PifsError(f"--reg-weight > 0 needs pifskit.torch.regularizer / adapter / blocks ({exc})") from None
    chain = make_chain(schedule, cfg.reg_steps, "trailing")
    patch = model_cfg.get("patch_size", cfg.reg_patch)
    partition = Partition.patches(image_shape, patch)
    reg = PIFSRegularizer(chain, partition, "lstar", margin=cfg.reg_margin, n_blocks=cfg.reg_blocks,
                          sample_fraction=cfg.reg_fraction)
    den = ChainDenoiser(ModelDenoiser(model, cfg.prediction, "discrete", sample_shape=image_shape), chain)
    return reg, den


# ---------------------------------------------------------------------------
# distributed context
# ---------------------------------------------------------------------------

@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    initialised_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_setup(device: str | None) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if world <= 1:
        dev = torch.device(device) if device else torch.device("cuda" if use_cuda else "cpu")
        return _Dist(device=dev)
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        here = True
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    return _Dist(world, rank, local_rank, dev, here)


def _all_true(flag: bool, ctx: _Dist) -> bool:
    if ctx.world == 1:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def _mean_over_ranks(value: float, ctx: _Dist) -> float:
    """The mean of a logged scalar over all ranks (the global-batch loss under DDP)."""
    if ctx.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world


# ---------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------

def _hparam_diff(stored: dict, given: dict) -> list[str]:
    diffs = []
    for k, v in given.items():
        if k in RESUMABLE_CHANGES or v is None:
            continue
        if k not in stored:
            diffs.append(f"{k} (not in checkpoint)")
        elif stored[k] != v:
            diffs.append(f"{k}: checkpoint {stored[k]!r}, given {v!r}")
    return diffs


def _rewrite_log(log_path: Path, upto_step: int) -> None:
    """Drop log lines written after the checkpoint's step (a crashed run's tail), atomically."""
    if not log_path.exists():
        return
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("event") != "step" or int(rec.get("step", 0)) <= upto_step:
            keep.append(line)
    atomic_write_bytes(log_path, lambda f: f.write(("\n".join(keep) + ("\n" if keep else "")).encode()))


def _autocast(ctx: _Dist, precision: str):
    if ctx.device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise PifsError(f"--precision {precision} needs a CUDA device (autocast is GPU-only here); use fp32/auto")
        return None, False
    if precision == "fp32":
        return None, False
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return (torch.bfloat16 if precision == "bf16" else torch.float16), precision == "fp16"


def train(data: DataSpec, out_dir: str | os.PathLike, steps: int, config: TrainConfig | None = None, *,
          resume: bool = False, resume_overrides: dict | None = None, ckpt_every: int = 0, log_every: int = 10,
          progress: bool = True, device: str | None = None,
          on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train to a total of ``steps`` steps; returns a summary dict.

    New run: ``data`` and ``config`` define it; ``out_dir/checkpoint.pt`` must not exist.
    Resume (``resume=True``): the run's own data and hyper-parameters are reloaded from
    ``out_dir``; ``resume_overrides`` (hyper-parameters the user gave again) must match them
    (``precision`` may change). ``ckpt_every = 0`` writes a checkpoint only at the end.
    """
    steps = check_positive_int(steps, "steps")
    out = Path(out_dir)
    ck_path = out / CHECKPOINT_NAME
    ctx = _dist_setup(device)
    try:
        ck = None
        if resume:
            ck = load_checkpoint(ck_path)
            stored = ck["hparams"]
            given = dict(resume_overrides or {})
            model_given = given.pop("model_overrides", None) or {}
            diffs = _hparam_diff(stored, given)
            diffs += [f"model {k}: checkpoint {ck['model_config'].get(k)!r}, given {v!r}"
                      for k, v in model_given.items() if v is not None and ck["model_config"].get(k) != v]
            if data is not None and DataSpec.from_dict(ck["data"]) != data:
                diffs.append(f"data: checkpoint {DataSpec.from_dict(ck['data']).spec_string()!r}, "
                             f"given {data.spec_string()!r}")
            if diffs:
                raise PifsError("resume with changed hyper-parameters: " + "; ".join(diffs)
                                + " (start a new run with another --out instead)")
            cfg = TrainConfig.from_dict({**stored, **{k: v for k, v in (resume_overrides or {}).items()
                                                      if k in RESUMABLE_CHANGES and v is not None}})
            data = DataSpec.from_dict(ck["data"])
            start = int(ck["step"])
            if steps < start:
                raise PifsError(f"--steps {steps} is below the checkpoint's step {start}; give the new total")
        else:
            if config is None or data is None:
                raise PifsError("a new run needs a data spec and a training config")
            if ck_path.exists():
                raise PifsError(f"{ck_path} exists; use --resume {out} to continue it, or another --out")
            cfg = config
            start = 0
        schedule = get_schedule(cfg.schedule)
        if not isinstance(schedule, DiscreteSchedule):
            raise PifsError(f"training needs a discrete schedule (e.g. cosine-discrete, ddpm, sd), "
                            f"got {cfg.schedule!r}")
        train_set, _ = data.load()
        image_shape = train_set.image_shape
        if ck is not None:
            model_cfg = dict(ck["model_config"])
            if tuple(ck["image_shape"]) != image_shape:
                raise PifsError(f"checkpoint was trained on images {tuple(ck['image_shape'])}, "
                                f"the data now gives {image_shape}")
        else:
            model_cfg = default_config(cfg.model, image_shape, cfg.prediction, **cfg.model_overrides)
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg)
        ema = build_model(model_cfg)
        ema.requires_grad_(False)
        if ck is not None:
            try:
                model.load_state_dict(ck["model_state"])
                ema.load_state_dict(ck["ema_state"])
            except RuntimeError as exc:
                raise PifsError(f"checkpoint weights do not match its model config: {str(exc)[:300]}") from None
        else:
            ema.load_state_dict(model.state_dict())
        model.to(ctx.device)
        ema.to(ctx.device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        amp_dtype, use_scaler = _autocast(ctx, cfg.precision)
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        if ck is not None:
            try:
                opt.load_state_dict(ck["optimizer_state"])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise PifsError(f"checkpoint optimizer state does not fit the model: {exc}") from None
            if use_scaler and ck.get("scaler_state"):
                scaler.load_state_dict(ck["scaler_state"])
        net: nn.Module = model
        if ctx.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            net = DDP(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)

        ab = schedule.alphas_cumprod
        a_tab = torch.from_numpy(np.sqrt(ab)).float().to(ctx.device)
        s_tab = torch.from_numpy(np.sqrt(1.0 - ab)).float().to(ctx.device)
        w_tab = torch.from_numpy(loss_weights(cfg, schedule, train_set)).float().to(ctx.device)
        reg, chain_den = (build_regularizer(model, model_cfg, schedule, cfg, image_shape) if cfg.reg_weight > 0
                          else (None, None))
        images = torch.from_numpy(train_set.images)
        plan = _BatchPlan(len(train_set), cfg.batch_size, cfg.seed, ctx.world, ctx.rank)
        T = schedule.num_train_timesteps
        hparams = cfg.to_dict()
        log_path = out / LOG_NAME

        def payload(step: int) -> dict:
            return {"model_config": model_cfg, "model_state": model.state_dict(), "ema_state": ema.state_dict(),
                    "optimizer_state": opt.state_dict(),
                    "scaler_state": scaler.state_dict() if use_scaler else {},
                    "rng": rng_state(), "step": step, "data": data.to_dict(), "hparams": hparams,
                    "image_shape": list(image_shape), "schedule": cfg.schedule, "prediction": cfg.prediction,
                    "timestep_convention": "discrete", "num_train_timesteps": T, "world_size": ctx.world,
                    "n_params": count_parameters(model), "n_train": len(train_set)}

        if ctx.main:
            out.mkdir(parents=True, exist_ok=True)
            if resume:
                _rewrite_log(log_path, start)
            logf = open(log_path, "a")
            logf.write(json.dumps({"event": "resume" if resume else "start", "step": start, "steps": steps,
                                   "hparams": hparams, "data": data.to_dict(), "model_config": model_cfg,
                                   "n_params": count_parameters(model), "n_train": len(train_set),
                                   "world_size": ctx.world, "device": str(ctx.device),
                                   "torch_threads": torch.get_num_threads()}) + "\n")
            logf.flush()
        bar = _Bar(progress and ctx.main, start, steps)
        t_last, n_imgs, last_loss = time.perf_counter(), 0, float("nan")
        t_start = t_last
        model.train()
        try:
            for step in range(start, steps):
                seed = step_seed(cfg.seed, step, ctx.rank)
                torch.manual_seed(seed)  # anything random inside the step (e.g. regulariser probes)
                g = torch.Generator().manual_seed(seed)
                idx = torch.from_numpy(plan(step))
                x0 = images[idx]
                t = torch.randint(0, T, (x0.shape[0],), generator=g)
                eps = torch.randn(x0.shape, generator=g)
                x0, t, eps = x0.to(ctx.device), t.to(ctx.device), eps.to(ctx.device)
                a, s = a_tab[t].view(-1, 1, 1, 1), s_tab[t].view(-1, 1, 1, 1)
                xt = a * x0 + s * eps
                target = training_target(cfg.prediction, x0, eps, a_tab[t], s_tab[t])
                for pg in opt.param_groups:
                    pg["lr"] = lr_at(step, cfg.lr, cfg.warmup)
                with torch.autocast(ctx.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    pred = net(xt, t)
                    mse = (pred.float() - target).pow(2).flatten(1).mean(1)
                    loss_mse = (w_tab[t] * mse).mean()
                if reg is not None:  # outside autocast: JVP probes in fp32
                    # CPU: an explicit step-seeded generator; GPU: the global RNG, seeded per step above
                    gen = torch.Generator().manual_seed(seed) if ctx.device.type == "cpu" else None
                    loss_reg = reg(chain_den, x0, generator=gen)
                else:
                    loss_reg = torch.zeros((), device=ctx.device)
                loss = loss_mse + cfg.reg_weight * loss_reg
                if not _all_true(bool(torch.isfinite(loss).item()), ctx):
                    raise PifsError(f"non-finite loss at step {step} (lr {lr_at(step, cfg.lr, cfg.warmup):g}); "
                                    f"stopped, the last checkpoint in {out} is kept unchanged — lower --lr or "
                                    "--reg-weight")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0
                                                       else float("inf"))
                scaler.step(opt)
                scaler.update()
                with torch.no_grad():
                    ep, mp = list(ema.parameters()), list(model.parameters())
                    torch._foreach_mul_(ep, cfg.ema_decay)
                    torch._foreach_add_(ep, mp, alpha=1.0 - cfg.ema_decay)
                    for eb, mb in zip(ema.buffers(), model.buffers()):
                        eb.copy_(mb)
                done = step + 1
                n_imgs += x0.shape[0] * ctx.world
                last_loss = _mean_over_ranks(float(loss.detach()), ctx)
                if on_step is not None:
                    on_step(done, last_loss)
                bar.update(done, last_loss)
                if ctx.main and (done % max(log_every, 1) == 0 or done == steps):
                    now = time.perf_counter()
                    logf.write(json.dumps({"event": "step", "step": done, "loss": last_loss,
                                           "loss_mse": float(loss_mse.detach()), "reg": float(loss_reg.detach()),
                                           "lr": lr_at(step, cfg.lr, cfg.warmup), "grad_norm": float(gnorm),
                                           "imgs_per_s": n_imgs / max(now - t_last, 1e-9),
                                           "s_per_step": (now - t_last) / max(n_imgs / (x0.shape[0] * ctx.world), 1),
                                           "elapsed_s": now - t_start}) + "\n")
                    logf.flush()
                    t_last, n_imgs = now, 0
                if ctx.main and ((ckpt_every and done % ckpt_every == 0) or done == steps):
                    save_checkpoint(ck_path, payload(done))
        finally:
            bar.close()
            if ctx.main:
                logf.close()
        return {"out": str(out), "checkpoint": str(ck_path), "start_step": start, "step": steps,
                "loss": last_loss, "n_params": count_parameters(model), "model_config": model_cfg,
                "hparams": hparams, "data": data.to_dict(), "seconds": time.perf_counter() - t_start,
                "s_per_step": (time.perf_counter() - t_start) / max(steps - start, 1)}
    finally:
        if ctx.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


class _Bar:
    """rich progress bar with loss and throughput on stderr (TTY only)."""

    def __init__(self, enabled: bool, start: int, total: int):
        self.prog = None
        if not enabled or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.prog = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.2f} it/s"),
                             TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.prog.start()
        self.task = self.prog.add_task("train", total=total, completed=start, loss=float("nan"), rate=0.0)
        self.t0, self.start = time.perf_counter(), start

    def update(self, done: int, loss: float) -> None:
        if self.prog is not None:
            rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
            self.prog.update(self.task, completed=done, loss=loss, rate=rate)

    def close(self) -> None:
        if self.prog is not None:
            self.prog.stop()
