"""Plain PyTorch training loop for the small denoisers; runs unchanged under ``torchrun``.

:func:`train` wires :func:`restore_or_init`, :class:`TrainStep` and :class:`RunPolicy`. Loss per sample:
``w(t) * mean((model(x_t, t) - target)^2) + reg_weight * R``, x_t = a_t x0 + s_t eps, w from
:data:`LOSS_WEIGHTINGS`, R the PIFS regulariser. EMA: theta_ema <- lerp(theta_ema, theta, 1 - ema_decay).
Batches, noise and timesteps are functions of (seed, step, rank), so a resumed run equals the uninterrupted
one bit for bit on CPU. Distribution, checkpoints and signals: docs/torch.md#training.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from torch import nn

from .._validate import PifsError, check_positive_int
from ..datasets import DataSpec, ImageDataset
from ..design.weighting import loss_weights as design_loss_weights
from ..design.weighting import min_snr_weights
from ..parameterization import short_prediction
from ..schedules import DiscreteSchedule, get_schedule
from .checkpoint import CHECKPOINT_NAME, atomic_write_bytes, load_checkpoint, load_weights, save_checkpoint
from .config import DEFAULT_CKPT_MINUTES, RESUMABLE_CHANGES, TRAIN_PREDICTIONS, WEIGHTINGS, TrainConfig  # noqa: F401
from .models import build_model, count_parameters, default_config, training_target

LOG_NAME = "log.jsonl"


class LossWeighting(Protocol):
    """Per-training-timestep loss weights w[n] (n = 0..T-1) in the prediction's own units."""

    def __call__(self, schedule: DiscreteSchedule, prediction: str, data: ImageDataset) -> np.ndarray: ...


@dataclass(frozen=True)
class Uniform:
    """w = 1."""

    def __call__(self, schedule: DiscreteSchedule, prediction: str, data: ImageDataset) -> np.ndarray:
        return np.ones(schedule.num_train_timesteps)


@dataclass(frozen=True)
class MinSNR:
    """Min-SNR-gamma: min(SNR, gamma) in x0 units, /SNR for epsilon, /(SNR + 1) for v
    (``pifskit.design.weighting.min_snr_weights`` at the schedule's logSNR table; finite at SNR = 0)."""

    gamma: float = 5.0

    def __call__(self, schedule: DiscreteSchedule, prediction: str, data: ImageDataset) -> np.ndarray:
        return min_snr_weights(schedule.logsnr_table, self.gamma, short_prediction(prediction, TRAIN_PREDICTIONS))


@dataclass(frozen=True)
class Geometric:
    """The geometric weighting of theory 6 II for the training images' PCA spectrum."""

    def __call__(self, schedule: DiscreteSchedule, prediction: str, data: ImageDataset) -> np.ndarray:
        return geometric_weights(schedule, prediction, data)


#: weighting name -> factory taking the TrainConfig
LOSS_WEIGHTINGS: dict[str, Callable[["TrainConfig"], LossWeighting]] = {
    "uniform": lambda cfg: Uniform(),
    "min-snr": lambda cfg: MinSNR(cfg.gamma),
    "geometric": lambda cfg: Geometric(),
}


def geometric_weights(schedule: DiscreteSchedule, prediction: str, data: ImageDataset) -> np.ndarray:
    """Per-timestep weights of the geometric weighting (theory 6 II), ``pifskit.design.weighting.loss_weights``
    at the schedule's logSNR table for the PCA spectrum of the training images (normalised so the
    epsilon weight -> 1 at pure noise)."""
    from ..spectra import from_data

    spectrum = from_data(data.images.reshape(len(data), -1).astype(np.float64), name=data.name)
    w = np.asarray(design_loss_weights(schedule.logsnr_table, spectrum,
                                       prediction=short_prediction(prediction, TRAIN_PREDICTIONS)), dtype=np.float64)
    if w.shape != (schedule.num_train_timesteps,) or not np.isfinite(w).all() or (w < 0).any():
        raise PifsError(f"geometric weights must be finite, >= 0, shape ({schedule.num_train_timesteps},)")
    return w


def make_weighting(cfg: "TrainConfig") -> LossWeighting:
    return LOSS_WEIGHTINGS[cfg.weighting](cfg)  # TrainConfig checked the name


def timestep_weights(cfg: "TrainConfig", schedule: DiscreteSchedule, data: ImageDataset) -> np.ndarray:
    """The run's weighting evaluated at every training timestep (finite, >= 0)."""
    w = np.asarray(make_weighting(cfg)(schedule, cfg.prediction, data), dtype=np.float64)
    if not np.isfinite(w).all():
        raise PifsError(f"{cfg.weighting} loss weights are not finite on schedule {cfg.schedule!r}")
    return w


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


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """theta_ema <- theta_ema + (1 - decay) (theta - theta_ema) (``lerp_``); buffers copied."""
    for e, m in zip(ema.parameters(), model.parameters()):
        e.lerp_(m.detach(), 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


def build_regularizer(model: nn.Module, model_cfg: dict, schedule: DiscreteSchedule, cfg: "TrainConfig",
                      image_shape: tuple[int, int, int]):
    """(regulariser, chain denoiser): R of ``pifskit.torch.regularizer.PIFSRegularizer`` on the
    ``reg_steps``-step trailing DDIM chain of the training schedule, over the DiT's patches
    (U-Net: ``reg_patch``), budget L*_t (1 + ``reg_margin``)."""
    from ..chains import make_chain
    from .adapter import ChainDenoiser, ModelDenoiser
    from .blocks import Partition
    from .regularizer import PIFSRegularizer

    chain = make_chain(schedule, cfg.reg_steps, "trailing")
    partition = Partition.patches(image_shape, model_cfg.get("patch_size", cfg.reg_patch))
    reg = PIFSRegularizer(chain, partition, "lstar", margin=cfg.reg_margin, n_blocks=cfg.reg_blocks,
                          sample_fraction=cfg.reg_fraction)
    den = ChainDenoiser(ModelDenoiser(model, cfg.prediction, "discrete", sample_shape=image_shape), chain)
    return reg, den


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

    def reduce(self, value: float, op: str) -> float:
        """``value`` reduced over all ranks ('sum', 'min' or 'max'; itself when not distributed)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
        return float(t.item())


def _dist_setup(device: str | None) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if world <= 1:
        dev = torch.device(device) if device else torch.device("cuda" if use_cuda else "cpu")
        return _Dist(device=dev)
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    here = not dist.is_initialized()
    if here:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return _Dist(world, rank, local_rank, torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"), here)


def _autocast(ctx: _Dist, precision: str):
    if ctx.device.type != "cuda" and precision in ("bf16", "fp16"):
        raise PifsError(f"--precision {precision} needs a CUDA device (autocast is GPU-only here); use fp32/auto")
    if ctx.device.type != "cuda" or precision == "fp32":
        return None, False
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return (torch.bfloat16 if precision == "bf16" else torch.float16), precision == "fp16"


def check_out_dir(out: str | os.PathLike, flag: str = "--out") -> Path:
    """``out`` as a Path if it is (or can be created as) a writable directory, else PifsError (creates nothing)."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise PifsError(f"{flag} {p} exists and is not a directory")
    probe = next((q for q in (p, *p.parents) if q.exists()), p)  # the nearest existing ancestor
    if probe.exists() and not probe.is_dir():
        raise PifsError(f"{flag} {p}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PifsError(f"{flag} {p}: directory {probe} is not writable")
    return p


def _hparam_diff(stored: dict, given: dict) -> list[str]:
    fixed = {k: v for k, v in given.items() if k not in RESUMABLE_CHANGES and v is not None}
    return [f"{k}: checkpoint {stored[k]!r}, given {v!r}" if k in stored else f"{k} (not in checkpoint)"
            for k, v in fixed.items() if k not in stored or stored[k] != v]


@dataclass
class RunState:
    """Everything a run needs to take steps: what :func:`restore_or_init` returns."""

    cfg: TrainConfig
    data: DataSpec
    train_set: ImageDataset
    schedule: DiscreteSchedule
    model_cfg: dict
    model: nn.Module
    ema: nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    start: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train_set.image_shape

    def start_record(self, ctx: _Dist, steps: int, resume: bool) -> dict:
        """The log's first line of a (resumed) run."""
        return {"event": "resume" if resume else "start", "step": self.start, "steps": steps,
                "hparams": self.cfg.to_dict(), "data": self.data.to_dict(), "model_config": self.model_cfg,
                "n_params": count_parameters(self.model), "n_train": len(self.train_set), "world_size": ctx.world,
                "device": str(ctx.device), "torch_threads": torch.get_num_threads()}

    def payload(self, step: int, world: int) -> dict:
        """The checkpoint dict at ``step`` (see :mod:`pifskit.torch.checkpoint`)."""
        return {"model_config": self.model_cfg, "model_state": self.model.state_dict(),
                "ema_state": self.ema.state_dict(), "optimizer_state": self.opt.state_dict(),
                "scaler_state": self.scaler.state_dict() if self.scaler.is_enabled() else {},
                "step": step, "data": self.data.to_dict(), "hparams": self.cfg.to_dict(),
                "image_shape": list(self.image_shape), "schedule": self.cfg.schedule,
                "prediction": self.cfg.prediction, "timestep_convention": "discrete",
                "num_train_timesteps": self.schedule.num_train_timesteps, "world_size": world,
                "n_params": count_parameters(self.model), "n_train": len(self.train_set)}


def _resume_config(ck: dict, data: DataSpec | None, steps: int, overrides: dict | None) -> tuple[TrainConfig, DataSpec]:
    stored = ck["hparams"]
    given = dict(overrides or {})
    model_given = given.pop("model_overrides", None) or {}
    diffs = _hparam_diff(stored, given)
    diffs += [f"model {k}: checkpoint {ck['model_config'].get(k)!r}, given {v!r}"
              for k, v in model_given.items() if v is not None and ck["model_config"].get(k) != v]
    if data is not None and DataSpec.from_dict(ck["data"]) != data:
        diffs.append(f"data: checkpoint {DataSpec.from_dict(ck['data']).spec_string()!r}, given {data.spec_string()!r}")
    if diffs:
        raise PifsError("resume with changed hyper-parameters: " + "; ".join(diffs)
                        + " (start a new run with another --out instead)")
    cfg = TrainConfig.from_dict({**stored, **{k: v for k, v in given.items()
                                              if k in RESUMABLE_CHANGES and v is not None}})
    if steps < int(ck["step"]):
        raise PifsError(f"--steps {steps} is below the checkpoint's step {int(ck['step'])}; give the new total")
    return cfg, DataSpec.from_dict(ck["data"])


def restore_or_init(out: Path, steps: int, data: DataSpec | None, config: TrainConfig | None, ctx: _Dist, *,
                    resume: bool, resume_overrides: dict | None = None) -> RunState:
    """A new run from (data, config), or (``resume``) the run in ``out`` from its checkpoint, on ``ctx.device``."""
    ck_path = out / CHECKPOINT_NAME
    ck = load_checkpoint(ck_path) if resume else None
    if ck is not None:
        cfg, data = _resume_config(ck, data, steps, resume_overrides)
    else:
        if config is None or data is None:
            raise PifsError("a new run needs a data spec and a training config")
        if ck_path.exists():
            raise PifsError(f"{ck_path} exists; use --resume {out} to continue it, or another --out")
        cfg = config
    schedule = get_schedule(cfg.schedule)
    if not isinstance(schedule, DiscreteSchedule):
        raise PifsError(f"training needs a discrete schedule (e.g. cosine-discrete, ddpm, sd), got {cfg.schedule!r}")
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
    model, ema = build_model(model_cfg), build_model(model_cfg).requires_grad_(False)
    if ck is not None:
        load_weights(model, ck["model_state"], f"{ck_path}: model weights")
        load_weights(ema, ck["ema_state"], f"{ck_path}: EMA weights")
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
    return RunState(cfg, data, train_set, schedule, model_cfg, model, ema, opt, scaler, amp_dtype,
                    int(ck["step"]) if ck is not None else 0)


@dataclass
class StepResult:
    loss: float          # mean over ranks
    loss_mse: float
    reg: float
    lr: float
    grad_norm: float
    images: int          # images this step over all ranks


class TrainStep:
    """One optimiser step as a function of the step number (noise, timesteps and batch seeded by it)."""

    def __init__(self, run: RunState, ctx: _Dist):
        self.run, self.ctx = run, ctx
        cfg, schedule = run.cfg, run.schedule
        ab = schedule.alphas_cumprod
        self.a_tab = torch.from_numpy(np.sqrt(ab)).float().to(ctx.device)
        self.s_tab = torch.from_numpy(np.sqrt(1.0 - ab)).float().to(ctx.device)
        self.w_tab = torch.from_numpy(timestep_weights(cfg, schedule, run.train_set)).float().to(ctx.device)
        self.reg, self.chain_den = (build_regularizer(run.model, run.model_cfg, schedule, cfg, run.image_shape)
                                    if cfg.reg_weight > 0 else (None, None))
        self.images = torch.from_numpy(run.train_set.images)
        self.plan = _BatchPlan(len(run.train_set), cfg.batch_size, cfg.seed, ctx.world, ctx.rank)
        self.net: nn.Module = run.model
        if ctx.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.net = DDP(run.model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)

    def __call__(self, step: int) -> StepResult:
        run, ctx, cfg = self.run, self.ctx, self.run.cfg
        seed = step_seed(cfg.seed, step, ctx.rank)
        torch.manual_seed(seed)  # anything random inside the step (e.g. regulariser probes)
        g = torch.Generator().manual_seed(seed)
        x0 = self.images[torch.from_numpy(self.plan(step))]
        t = torch.randint(0, run.schedule.num_train_timesteps, (x0.shape[0],), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        x0, t, eps = x0.to(ctx.device), t.to(ctx.device), eps.to(ctx.device)
        a, s = self.a_tab[t], self.s_tab[t]
        xt = a.view(-1, 1, 1, 1) * x0 + s.view(-1, 1, 1, 1) * eps
        target = training_target(cfg.prediction, x0, eps, a, s)
        lr = lr_at(step, cfg.lr, cfg.warmup)
        for pg in run.opt.param_groups:
            pg["lr"] = lr
        with torch.autocast(ctx.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
            pred = self.net(xt, t)
            mse = (pred.float() - target).pow(2).flatten(1).mean(1)
            loss_mse = (self.w_tab[t] * mse).mean()
        if self.reg is not None:  # outside autocast: JVP probes in fp32
            # CPU: an explicit step-seeded generator; GPU: the global RNG, seeded per step above
            gen = torch.Generator().manual_seed(seed) if ctx.device.type == "cpu" else None
            loss_reg = self.reg(self.chain_den, x0, generator=gen)
        else:
            loss_reg = torch.zeros((), device=ctx.device)
        loss = loss_mse + cfg.reg_weight * loss_reg
        if ctx.reduce(1.0 if bool(torch.isfinite(loss).item()) else 0.0, "min") < 1.0:
            raise PifsError(f"non-finite loss at step {step} (lr {lr:g}); stopped, the last checkpoint is kept "
                            "unchanged — lower --lr or --reg-weight")
        run.opt.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.opt)
        gnorm = torch.nn.utils.clip_grad_norm_(run.model.parameters(),
                                               cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        run.scaler.step(run.opt)
        run.scaler.update()
        ema_update(run.ema, run.model, cfg.ema_decay)
        return StepResult(ctx.reduce(float(loss.detach()), "sum") / ctx.world, float(loss_mse.detach()),
                          float(loss_reg.detach()), lr, float(gnorm), x0.shape[0] * ctx.world)


class TrainingInterrupted(Exception):
    """SIGINT / SIGTERM stopped the run after ``step`` steps; ``saved``: a checkpoint at ``step`` was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path, saved: bool):
        self.signum, self.step, self.checkpoint, self.saved = int(signum), int(step), checkpoint, saved
        name = signal.Signals(self.signum).name
        if saved:
            what = f"checkpoint at step {step} saved to {checkpoint}"
        else:
            what = f"the checkpoint at step {step} in {checkpoint} is current" if step else "nothing to save"
        super().__init__(f"interrupted by {name} at step {step}; {what}")

    @property
    def exit_code(self) -> int:
        """128 + signal number (130 for SIGINT, 143 for SIGTERM), the shell's convention."""
        return 128 + self.signum


class _StopSignals:
    """While active, SIGINT / SIGTERM set ``signum`` instead of killing; a second one acts as usual."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum, self._old = 0, {}

    def _handler(self, signum, frame):
        if self.signum:  # second signal: the default behaviour (KeyboardInterrupt / termination)
            self.__exit__()
            signal.raise_signal(signum)
            return
        self.signum = signum

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


class RunPolicy:
    """When to log (every ``log_every`` steps and at the end), when to checkpoint (every ``ckpt_every`` steps,
    every ``ckpt_minutes`` of wall time, at the end, on a stop signal); rank 0 writes ``log.jsonl``."""

    def __init__(self, out: Path, steps: int, start: int, ctx: _Dist, *, ckpt_every: int = 0,
                 ckpt_minutes: float = DEFAULT_CKPT_MINUTES, log_every: int = 10):
        if ckpt_every < 0 or not (ckpt_minutes >= 0):
            raise PifsError("--ckpt-every and --ckpt-minutes must be >= 0 (0: off)")
        self.out, self.steps, self.ctx = out, steps, ctx
        self.ckpt_every, self.ckpt_s, self.log_every = ckpt_every, 60.0 * ckpt_minutes, max(log_every, 1)
        self.t_start = self.t_ckpt = self.t_log = time.perf_counter()
        self.n_imgs, self.n_steps, self.saved_step = 0, 0, start
        self.log_path = out / LOG_NAME
        self.logf = None

    def open_log(self, record: dict, resume: bool) -> None:
        if not self.ctx.main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            _rewrite_log(self.log_path, record["step"])
        self.logf = open(self.log_path, "a")
        self.event(record)

    def event(self, record: dict) -> None:
        if self.logf is not None:
            self.logf.write(json.dumps(record) + "\n")
            self.logf.flush()

    def after_step(self, done: int, res: StepResult, save: Callable[[int], None]) -> None:
        self.n_imgs += res.images
        self.n_steps += 1
        now = time.perf_counter()
        if done % self.log_every == 0 or done == self.steps:
            dt = max(now - self.t_log, 1e-9)
            self.event({"event": "step", "step": done, "loss": res.loss, "loss_mse": res.loss_mse, "reg": res.reg,
                        "lr": res.lr, "grad_norm": res.grad_norm, "imgs_per_s": self.n_imgs / dt,
                        "s_per_step": dt / max(self.n_steps, 1), "elapsed_s": now - self.t_start})
            self.t_log, self.n_imgs, self.n_steps = now, 0, 0
        if (done == self.steps or (self.ckpt_every and done % self.ckpt_every == 0)
                or (self.ckpt_s and now - self.t_ckpt >= self.ckpt_s)):
            self.checkpoint(done, save)

    def stop_if_signalled(self, done: int, signum: int, save: Callable[[int], None], ck_path: Path) -> None:
        """After a stop signal (``signum`` > 0) before the last step: checkpoint, log, raise TrainingInterrupted."""
        if not signum or done >= self.steps:
            return
        saved = done > self.saved_step
        if saved:
            self.checkpoint(done, save)
        self.event({"event": "interrupted", "step": done, "signal": signal.Signals(signum).name})
        raise TrainingInterrupted(signum, done, ck_path, saved)

    def checkpoint(self, done: int, save: Callable[[int], None]) -> None:
        if self.ctx.main:
            save(done)
        self.saved_step, self.t_ckpt = done, time.perf_counter()

    def close(self) -> None:
        if self.logf is not None:
            self.logf.close()
            self.logf = None


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


def train(data: DataSpec | None, out_dir: str | os.PathLike, steps: int, config: TrainConfig | None = None, *,
          resume: bool = False, resume_overrides: dict | None = None, ckpt_every: int = 0,
          ckpt_minutes: float = DEFAULT_CKPT_MINUTES, log_every: int = 10,
          progress: Callable[..., None] | None = None, device: str | None = None,
          on_step: Callable[[int, float], None] | None = None) -> dict:
    """Train to a total of ``steps`` steps; returns a summary dict.

    New run: ``data`` and ``config`` (``out_dir`` holds no checkpoint). ``resume``: the run in ``out_dir``, whose
    hyper-parameters ``resume_overrides`` must match (``precision`` may change). Checkpoints every ``ckpt_every``
    steps and ``ckpt_minutes`` (0: off), at the end and on SIGINT / SIGTERM (then :class:`TrainingInterrupted`).
    ``progress(completed=step, loss="0.1234")`` is called on the main rank after each step.
    """
    steps = check_positive_int(steps, "steps")
    out = check_out_dir(out_dir)
    ck_path = out / CHECKPOINT_NAME
    ctx = _dist_setup(device)
    try:
        with _StopSignals() as stop:
            run = restore_or_init(out, steps, data, config, ctx, resume=resume, resume_overrides=resume_overrides)
            step_fn = TrainStep(run, ctx)
            policy = RunPolicy(out, steps, run.start, ctx, ckpt_every=ckpt_every, ckpt_minutes=ckpt_minutes,
                               log_every=log_every)
            policy.open_log(run.start_record(ctx, steps, resume), resume)

            def save(step: int) -> None:
                save_checkpoint(ck_path, run.payload(step, ctx.world))

            last_loss, done = float("nan"), run.start
            run.model.train()
            try:
                for step in range(run.start, steps):
                    if ctx.reduce(float(stop.signum), "max"):
                        break
                    res = step_fn(step)
                    done, last_loss = step + 1, res.loss
                    if on_step is not None:
                        on_step(done, last_loss)
                    if progress and ctx.main:
                        progress(completed=done, loss=f"{last_loss:.4f}")
                    policy.after_step(done, res, save)
                policy.stop_if_signalled(done, int(ctx.reduce(float(stop.signum), "max")), save, ck_path)
            finally:
                policy.close()
        seconds = time.perf_counter() - policy.t_start
        return {"out": str(out), "checkpoint": str(ck_path), "start_step": run.start, "step": steps,
                "loss": last_loss, "n_params": count_parameters(run.model), "model_config": run.model_cfg,
                "hparams": run.cfg.to_dict(), "data": run.data.to_dict(), "seconds": seconds,
                "s_per_step": seconds / max(steps - run.start, 1)}
    finally:
        if ctx.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


