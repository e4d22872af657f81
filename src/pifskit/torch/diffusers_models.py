"""Load a diffusers denoiser from a local ``save_pretrained`` folder as pifskit's ``(model, info)`` entry.

Supported: UNet2DConditionModel (SD 1.x / 2.x / XL), UNet2DModel, SD3Transformer2DModel, FluxTransformer2DModel
(latents packed into 2 x 2 patches as FluxPipeline does). See docs/diffusers.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._json import read_json_object
from .._validate import PifsError

#: diffusers model classes pifskit can wrap as model(x, t)
SUPPORTED_MODELS = ("UNet2DConditionModel", "UNet2DModel", "SD3Transformer2DModel", "FluxTransformer2DModel")
FLOW_MODELS = ("SD3Transformer2DModel", "FluxTransformer2DModel")
#: FluxPipeline's default guidance for guidance-distilled transformers (FLUX.1-dev)
FLUX_GUIDANCE = 3.5
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: SD 1.x's training schedule, used (and stated) when no scheduler config sits next to a UNet
FALLBACK_SCHEDULER = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
                      "beta_end": 0.012, "beta_schedule": "scaled_linear", "timestep_spacing": "trailing",
                      "prediction_type": "epsilon"}


def pipeline_index(root: Path) -> tuple[dict, type | None]:
    """(``model_index.json`` of a pipeline folder, its diffusers pipeline class or None if unknown)."""
    import diffusers
    from transformers.utils import logging as tlog

    index = read_json_object(Path(root) / "model_index.json")
    level = tlog.get_verbosity()
    tlog.set_verbosity_error()  # importing a pipeline imports image processors, which warn without torchvision
    try:
        return index, getattr(diffusers, index.get("_class_name", ""), None)
    finally:
        tlog.set_verbosity(level)


def resolve_model_folder(path: str | Path, subfolder: str | None = None) -> tuple[Path, Path | None, dict]:
    """(model folder, pipeline root or None, the model's config.json) of a local diffusers folder."""
    root = Path(path)
    if not root.is_dir():
        raise PifsError(f"--diffusers {root}: not a directory (give a folder written by save_pretrained)")
    pipeline_root = root if (root / "model_index.json").is_file() else None
    if subfolder is not None:
        folder = root / subfolder
        if not folder.is_dir():
            raise PifsError(f"{root} has no subfolder {subfolder!r}")
    elif (root / "config.json").is_file():
        folder = root
    elif pipeline_root is not None:
        cands = [s for s in ("unet", "transformer") if (root / s / "config.json").is_file()]
        if not cands:
            raise PifsError(f"{root} is a pipeline folder without a unet/ or transformer/ model; pass --subfolder")
        folder = root / cands[0]
    else:
        raise PifsError(f"{root} is not a diffusers model folder (no config.json or model_index.json)")
    if not (folder / "config.json").is_file():
        raise PifsError(f"{folder} is not a diffusers model folder (no config.json)")
    cfg = read_json_object(folder / "config.json")
    cls = cfg.get("_class_name")
    if not cls:
        raise PifsError(f"{folder / 'config.json'} has no _class_name: not a diffusers model config")
    if cls not in SUPPORTED_MODELS:
        raise PifsError(f"unsupported diffusers model class {cls!r}; supported: {', '.join(SUPPORTED_MODELS)}")
    if pipeline_root is None and (folder.parent / "model_index.json").is_file():
        pipeline_root = folder.parent
    return folder, pipeline_root, cfg


def _scheduler_config(folder: Path, pipeline_root: Path | None) -> tuple[dict | None, str | None]:
    for cand in ([pipeline_root / "scheduler" / "scheduler_config.json"] if pipeline_root else []) + \
            [folder / "scheduler_config.json", folder.parent / "scheduler" / "scheduler_config.json"]:
        if cand.is_file():
            return read_json_object(cand), str(cand)
    return None, None


def _normalise_scheduler(sched_cfg: dict, flow: bool, image_seq_len: int) -> tuple[dict, list[str]]:
    """A config pifskit's reader accepts: flow dynamic shifting -> the fixed shift at this latent size;
    VP classes outside its families -> the same training schedule under DDIMScheduler."""
    from ..scheduler_config import DDIM_FAMILY, EULER_FAMILY, FLOW_FAMILY
    from ..schedules import calculate_shift

    notes = []
    cfg = dict(sched_cfg)
    cls = cfg.get("_class_name", "")
    if flow:
        if cls not in FLOW_FAMILY:
            notes.append(f"scheduler {cls or '?'} read as FlowMatchEulerDiscreteScheduler")
            cfg["_class_name"] = "FlowMatchEulerDiscreteScheduler"
        if cfg.get("use_dynamic_shifting"):
            mu = calculate_shift(image_seq_len, cfg)
            shift = math.exp(mu) if cfg.get("time_shift_type", "exponential") == "exponential" else mu
            cfg.update({"use_dynamic_shifting": False, "shift": shift})
            notes.append(f"dynamic shifting at {image_seq_len} latent tokens: mu = {mu:.4g}, shift {shift:.4g}")
        return cfg, notes
    if cls not in DDIM_FAMILY + EULER_FAMILY:
        notes.append(f"scheduler {cls or '?'}: its training schedule, run as a DDIM chain")
        keep = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                "rescale_betas_zero_snr", "prediction_type", "timestep_spacing", "steps_offset")
        cfg = {k: v for k, v in cfg.items() if k in keep}
        cfg["_class_name"] = "DDIMScheduler"
        if cfg.get("timestep_spacing") not in ("leading", "trailing", "linspace"):
            cfg["timestep_spacing"] = "trailing"
    return cfg, notes


@dataclass(eq=False)
class DiffusersModel:
    """``model(x, t)`` -> the diffusers model's prediction, conditioning bound, on its device and dtype. Not an
    ``nn.Module``: the analysis' ``.to(float32/float64)`` must not undo a half-precision choice (``to`` is a no-op)."""

    model: Any
    kind: str
    cond: dict[str, torch.Tensor]
    device: torch.device
    dtype: torch.dtype
    out_channels: int | None = None

    def to(self, *args, **kwargs) -> DiffusersModel:
        return self

    def eval(self) -> DiffusersModel:
        self.model.eval()
        return self

    def _batch(self, v: torch.Tensor, B: int) -> torch.Tensor:
        return v.to(self.device, self.dtype).expand((B,) + tuple(v.shape[1:]))

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:  # pragma: no cover - torch < 2.3
            return self._forward(x, t)
        # the fused attention kernels have no forward-mode AD (JVPs); the math kernel has
        with sdpa_kernel(SDPBackend.MATH):
            return self._forward(x, t)

    def _forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        xin = x.to(self.device, self.dtype)
        t = torch.as_tensor(t).to(self.device, torch.float32).reshape(-1).expand(B)
        if self.kind == "UNet2DConditionModel":
            extra = {}
            if "text_embeds" in self.cond:
                extra["added_cond_kwargs"] = {"text_embeds": self._batch(self.cond["text_embeds"], B),
                                              "time_ids": self._batch(self.cond["time_ids"], B)}
            out = self.model(xin, t, encoder_hidden_states=self._batch(self.cond["encoder_hidden_states"], B),
                             return_dict=False, **extra)[0]
        elif self.kind == "UNet2DModel":
            out = self.model(xin, t, return_dict=False)[0]
        elif self.kind == "FluxTransformer2DModel":
            out = _flux_forward(self, xin, t, B)
        else:  # SD3Transformer2DModel
            out = self.model(hidden_states=xin, encoder_hidden_states=self._batch(self.cond["encoder_hidden_states"], B),
                             pooled_projections=self._batch(self.cond["pooled_projections"], B), timestep=t,
                             return_dict=False)[0]
        if self.out_channels is not None and out.shape[1] == 2 * self.out_channels:
            out = out[:, : self.out_channels]  # learned variance: the first half is the prediction
        return out.to(x.device, x.dtype)


def _flux_forward(self: DiffusersModel, x: torch.Tensor, t: torch.Tensor, B: int) -> torch.Tensor:  # noqa: N805
    """FluxPipeline's packing: (B, C, H, W) -> (B, H/2 * W/2, 4C) tokens with (0, row, col) ids, and back."""
    _, C, H, W = x.shape
    h, w = H // 2, W // 2
    packed = x.reshape(B, C, h, 2, w, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, 4 * C)
    img_ids = torch.zeros(h, w, 3, device=x.device, dtype=x.dtype)
    img_ids[..., 1] = torch.arange(h, device=x.device, dtype=x.dtype)[:, None]
    img_ids[..., 2] = torch.arange(w, device=x.device, dtype=x.dtype)[None, :]
    ehs = self._batch(self.cond["encoder_hidden_states"], B)
    txt_ids = torch.zeros(ehs.shape[1], 3, device=x.device, dtype=x.dtype)
    guidance = self.cond.get("guidance")
    out = self.model(hidden_states=packed, timestep=t.to(x.dtype), encoder_hidden_states=ehs,
                     pooled_projections=self._batch(self.cond["pooled_projections"], B), txt_ids=txt_ids,
                     img_ids=img_ids.reshape(h * w, 3),
                     guidance=None if guidance is None else guidance.to(x.device, torch.float32).expand(B),
                     return_dict=False)[0]
    return out.reshape(B, h, w, C, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def _encode_prompt(pipeline_root: Path, kind: str, prompt: str, device, model) -> dict[str, torch.Tensor] | None:
    """The pipeline's own encode_prompt on its text encoders (None when the folder has none)."""
    index = read_json_object(pipeline_root / "model_index.json")
    encoders = [k for k in index if k.startswith("text_encoder") and isinstance(index[k], list) and index[k][0]]
    if not encoders:
        return None
    index, pipe_cls = pipeline_index(pipeline_root)
    if pipe_cls is None:
        raise PifsError(f"unknown pipeline class {index.get('_class_name', '')!r} in {pipeline_root / 'model_index.json'}")
    import inspect

    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    wanted = [k for k in inspect.signature(pipe_cls.__init__).parameters if k != "self"]
    keep = {k for k in index if k.startswith(("text_encoder", "tokenizer", "scheduler"))}
    skip: dict[str, Any] = {k: None for k in wanted
                            if k not in keep or not (isinstance(index.get(k), list) and index[k][0])}
    skip["transformer" if kind in FLOW_MODELS else "unet"] = model  # encode_prompt may read its config
    verbosity, tverbosity = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        pipe = pipe_cls.from_pretrained(str(pipeline_root), **skip)
        pipe.to(device)
    except Exception as exc:  # noqa: BLE001 - diffusers raises many types; report one line
        raise PifsError(f"cannot load the text encoders of {pipeline_root}: {type(exc).__name__}: {exc}") from None
    finally:
        dlog.set_verbosity(verbosity)
        tlog.set_verbosity(tverbosity)
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()
    with torch.no_grad():
        if kind == "SD3Transformer2DModel":
            emb, _, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, prompt_3=None, device=device,
                                                    do_classifier_free_guidance=False)
            return {"encoder_hidden_states": emb, "pooled_projections": pooled}
        if kind == "FluxTransformer2DModel":
            emb, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=device)
            return {"encoder_hidden_states": emb, "pooled_projections": pooled}
        out = pipe.encode_prompt(prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False)
        if len(out) == 4:  # SDXL: (embeds, negative, pooled, negative pooled)
            return {"encoder_hidden_states": out[0], "text_embeds": out[2]}
        return {"encoder_hidden_states": out[0]}


def _zeros_cond(kind: str, cfg: dict) -> dict[str, torch.Tensor]:
    if kind == "UNet2DConditionModel":
        dim = cfg.get("cross_attention_dim") or 768
        dim = dim[0] if isinstance(dim, (list, tuple)) else dim
        out = {"encoder_hidden_states": torch.zeros(1, 77, int(dim))}
        if cfg.get("addition_embed_type") == "text_time":
            pooled = int(cfg["projection_class_embeddings_input_dim"]) - 6 * int(cfg["addition_time_embed_dim"])
            out["text_embeds"] = torch.zeros(1, pooled)
        return out
    if kind in FLOW_MODELS:
        return {"encoder_hidden_states": torch.zeros(1, 77, int(cfg["joint_attention_dim"])),
                "pooled_projections": torch.zeros(1, int(cfg["pooled_projection_dim"]))}
    return {}


def load_diffusers_model(path: str | Path, subfolder: str | None = None, prompt: str | None = None, *,
                         device: str = "cpu", dtype: str = "float32",
                         resolution: int | None = None) -> tuple[DiffusersModel, dict]:
    """``(model, info)`` for pifskit's analysis from a local diffusers folder (see the module docstring).

    ``prompt``: None -> the empty prompt where the pipeline folder has text encoders, else zeros;
    a string needs text encoders. ``resolution``: latent side (default the model's ``sample_size``).
    """
    try:
        import diffusers
    except ImportError:  # pragma: no cover
        raise PifsError("--diffusers needs the diffusers package: pip install 'pifskit[diffusers]'") from None
    if dtype not in DTYPES:
        raise PifsError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise PifsError(f"bad --device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PifsError("--device cuda: no CUDA device is available")
    folder, pipeline_root, cfg = resolve_model_folder(path, subfolder)
    kind = cfg["_class_name"]
    from diffusers.utils import logging as dlog

    verbosity = dlog.get_verbosity()
    dlog.set_verbosity_error()  # e.g. the 'install accelerate' advice on every load
    try:
        model = getattr(diffusers, kind).from_pretrained(str(folder), torch_dtype=DTYPES[dtype])
    except Exception as exc:  # noqa: BLE001
        raise PifsError(f"cannot load {kind} from {folder}: {type(exc).__name__}: {exc}") from None
    finally:
        dlog.set_verbosity(verbosity)
    model = model.to(dev).eval().requires_grad_(False)

    flow = kind in FLOW_MODELS
    flux = kind == "FluxTransformer2DModel"
    C = int(cfg.get("in_channels", 4)) // (4 if flux else 1)
    side = int(resolution or cfg.get("sample_size") or (128 if flux else 64))
    if flux and side % 2:
        raise PifsError(f"Flux packs 2 x 2 latent patches: the latent side must be even, got {side}")
    patch_cfg = 2 if flux else int(cfg.get("patch_size", 1) or 1)
    tokens = (side // patch_cfg) ** 2
    conditioning = "none (unconditional model)"
    cond: dict[str, torch.Tensor] = {}
    if kind != "UNet2DModel":
        enc = None if pipeline_root is None else _encode_prompt(pipeline_root, kind, prompt or "", dev, model)
        if enc is None:
            if prompt is not None:
                raise PifsError(f"--prompt needs the pipeline's text encoders, and {path} has none "
                                "(drop --prompt to condition on zeros)")
            cond = _zeros_cond(kind, cfg)
            conditioning = "zeros (no text encoder next to the model)"
        else:
            cond = {k: v.detach() for k, v in enc.items()}
            conditioning = f"prompt {'' if prompt is None else prompt!r} through the pipeline's text encoders"
        if flux and cfg.get("guidance_embeds"):
            cond["guidance"] = torch.tensor([FLUX_GUIDANCE])
            conditioning += f"; guidance {FLUX_GUIDANCE}"
        if kind == "UNet2DConditionModel" and cfg.get("addition_embed_type") == "text_time":
            px = side * 8  # SDXL micro-conditioning: original size, crop (0, 0), target size in pixels
            cond["time_ids"] = torch.tensor([[px, px, 0, 0, px, px]], dtype=torch.float32)

    sched_cfg, sched_path = _scheduler_config(folder, pipeline_root)
    notes = []
    if sched_cfg is None:
        sched_cfg = ({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0}
                     if flow else dict(FALLBACK_SCHEDULER))
        notes.append("no scheduler config next to the model: assumed " + json.dumps(sched_cfg))
    sched_norm, more = _normalise_scheduler(sched_cfg, flow, tokens)
    notes += more
    if flow:
        # SD3's transformer takes t' x 1000; FluxPipeline hands its transformer t' (it scales internally)
        info = {"prediction_type": "flow", "timestep_convention": "flow",
                "timestep_scale": 1.0 if flux else float(sched_norm.get("num_train_timesteps", 1000))}
    else:
        info = {"prediction_type": str(sched_cfg.get("prediction_type", "epsilon")),
                "timestep_convention": "discrete"}
    info.update({"sample_shape": (C, side, side), "patch": 2 if side % 2 == 0 else 1,
                 "source": "diffusers", "model_class": kind, "model_folder": str(folder),
                 "scheduler_config": sched_norm, "scheduler_config_path": sched_path,
                 "conditioning": conditioning, "device": str(dev), "compute_dtype": dtype,
                 "pixel_variance": 1.0, "notes": "; ".join(notes)})
    learned_variance = not flow and int(cfg.get("out_channels") or C) == 2 * C  # the first half is the prediction
    return DiffusersModel(model, kind, cond, dev, DTYPES[dtype], out_channels=C if learned_variance else None), info
