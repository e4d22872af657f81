"""The training configuration (no torch import: the CLI builds ``pifskit train``'s flags from its fields).

Each field's metadata holds its CLI help (``help``) and optionally ``choices``; ``cli: False`` hides it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from .._validate import PifsError, check_choice, check_positive_int
from ..parameterization import normalize_prediction

#: names of the loss weightings (pifskit.torch.train.LOSS_WEIGHTINGS holds one object each)
WEIGHTINGS = ("uniform", "min-snr", "geometric")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: prediction types the trainer's models take
TRAIN_PREDICTIONS = ("epsilon", "sample", "v_prediction")
#: hyper-parameters that may change on resume (they do not alter the optimisation path's definition)
RESUMABLE_CHANGES = ("precision",)
#: default wall time between checkpoints (minutes)
DEFAULT_CKPT_MINUTES = 5.0


def _hp(default, help: str, **meta):
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (everything except the data, the step budget and I/O cadence).

    Each field's metadata: ``help`` (the CLI's help text), optionally ``choices``.
    """

    model: str = _hp("dit", "architecture", choices=("dit", "unet"))
    prediction: str = _hp("v_prediction", "what the network predicts: eps | x0 | v (diffusers' epsilon | sample | "
                                          "v_prediction also accepted)")
    schedule: str = _hp("cosine-discrete", "discrete training schedule: cosine-discrete, ddpm, sd")
    batch_size: int = _hp(64, "global batch")
    lr: float = _hp(5e-4, "AdamW learning rate")
    weight_decay: float = _hp(0.0, "AdamW weight decay")
    warmup: int = _hp(100, "linear warm-up steps")
    grad_clip: float = _hp(1.0, "gradient-norm clip, 0 = off")
    ema_decay: float = _hp(0.999, "EMA decay")
    seed: int = _hp(0, "seed of init, data order, noise")
    weighting: str = _hp("uniform", "loss weighting over timesteps", choices=WEIGHTINGS)
    gamma: float = _hp(5.0, "Min-SNR gamma")
    reg_weight: float = _hp(0.0, "weight of the PIFS regulariser")
    reg_steps: int = _hp(10, "regulariser: steps of the trailing DDIM chain whose L*_t budgets it uses")
    reg_margin: float = _hp(0.0, "regulariser: budget L*_t (1 + margin)")
    reg_blocks: int = _hp(1, "regulariser: probed input blocks (its own default probe budget, <= 1.5x step cost)")
    reg_fraction: float = _hp(0.125, "regulariser: fraction of the batch regularised")
    reg_patch: int = _hp(4, "regulariser: patch size for the U-Net (the DiT uses its own patches)")
    precision: str = _hp("auto", "autocast on GPU (auto: bf16 if supported); CPU runs fp32; may change on resume",
                         choices=PRECISIONS)
    model_overrides: dict = field(default_factory=dict, metadata={"cli": False})

    def __post_init__(self):
        check_choice(self.model, "model", ("dit", "unet"))
        self.prediction = normalize_prediction(self.prediction, TRAIN_PREDICTIONS)
        check_positive_int(self.batch_size, "batch_size")
        check_choice(self.weighting, "weighting", WEIGHTINGS)
        check_choice(self.precision, "precision", PRECISIONS)
        for k, lo in (("lr", "positive"), ("gamma", "positive"), ("weight_decay", "non-negative"),
                      ("reg_weight", "non-negative"), ("grad_clip", "non-negative")):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or lo == "non-negative" and v == 0)):
                raise PifsError(f"{k} must be a {lo} number, got {v!r}")
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


def cli_fields() -> list:
    """The fields ``pifskit train`` exposes as ``--flag-name`` options."""
    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]
