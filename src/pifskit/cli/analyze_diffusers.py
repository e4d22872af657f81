"""``pifskit analyze-model --diffusers PATH``: the options and loader for local diffusers models.

Kept apart from :mod:`pifskit.cli.analyze_cmd`, which calls :func:`add_diffusers_options` and
:func:`load_for_args`.
"""

from __future__ import annotations

import argparse

from .._validate import PifsError


def add_diffusers_options(p: argparse.ArgumentParser) -> None:
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


def load_for_args(args: argparse.Namespace):
    """(model, info) for --diffusers; ``info['scheduler_config']`` is the scheduler config next to the model."""
    from ..torch.diffusers_models import load_diffusers_model

    if args.model:
        raise PifsError("give either --model or --diffusers, not both")
    if args.latent_size is not None and args.latent_size < 1:
        raise PifsError(f"--latent-size must be >= 1, got {args.latent_size}")
    return load_diffusers_model(args.diffusers, args.subfolder, args.prompt, device=args.device,
                                dtype=args.dtype, resolution=args.latent_size)
