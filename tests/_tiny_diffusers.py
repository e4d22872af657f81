"""Tiny random diffusers / transformers components built offline (no downloads), for the interop tests.

Sizes are the smallest the classes accept, so a pipeline run costs milliseconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SD_KW = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
HIDDEN = 16  # CLIP hidden size = the UNet's cross-attention dim


def clip_tokenizer(folder: Path):
    """A CLIPTokenizer on a 54-token vocabulary (the two specials and the letters, alone and word-final)."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in LETTERS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _clip_config(vocab_size: int = 2 + 2 * len(LETTERS)):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=77, projection_dim=HIDDEN,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)


def clip_text_model(seed: int = 0, projection: bool = False):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(_clip_config()).eval()


def tiny_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=HIDDEN,
                                attention_head_dim=2, norm_num_groups=4).eval()


def tiny_sd3_transformer(seed: int = 0):
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=8, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
                                 num_attention_heads=2, joint_attention_dim=2 * HIDDEN, caption_projection_dim=16,
                                 pooled_projection_dim=2 * HIDDEN, out_channels=4, pos_embed_max_size=16).eval()


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                         up_block_types=("UpDecoderBlock2D",), block_out_channels=(8,), layers_per_block=1,
                         latent_channels=4, norm_num_groups=4, sample_size=8, shift_factor=0.0,
                         scaling_factor=1.0).eval()


def sd_pipeline(scheduler, folder: Path):
    """StableDiffusionPipeline: tiny UNet2DConditionModel + tiny CLIP text encoder + offline tokenizer."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=clip_text_model(), tokenizer=clip_tokenizer(folder),
                                   unet=tiny_unet(), scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sd3_pipeline(scheduler, folder: Path):
    """StableDiffusion3Pipeline: tiny SD3 transformer + two tiny CLIP encoders, no T5 (zeros, as diffusers does)."""
    from diffusers import StableDiffusion3Pipeline

    tok = clip_tokenizer(folder)
    pipe = StableDiffusion3Pipeline(transformer=tiny_sd3_transformer(), scheduler=scheduler, vae=tiny_vae(),
                                    text_encoder=clip_text_model(1, projection=True), tokenizer=tok,
                                    text_encoder_2=clip_text_model(2, projection=True), tokenizer_2=tok,
                                    text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class TimestepSpy:
    """Records the ``timestep`` every forward call of a diffusers model receives (positional or keyword)."""

    def __init__(self, model):
        self.seen: list[list[float]] = []
        self._h = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        t = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        self.seen.append(torch.as_tensor(t, dtype=torch.float64).reshape(-1).tolist())

    def per_call(self) -> list[float]:
        """One timestep per call (asserting the batch shares it)."""
        out = []
        for ts in self.seen:
            assert len(set(ts)) == 1, ts
            out.append(ts[0])
        return out

    def remove(self) -> None:
        self._h.remove()


def t5_tokenizer():
    """A T5TokenizerFast on a Unigram vocabulary (the specials, the word marker and the letters), built in
    memory (Unigram, as T5's own, so save_pretrained / from_pretrained round-trip)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)] + [(c, -2.0) for c in LETTERS]
    tk = Tokenizer(models.Unigram(vocab, unk_id=2))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    return T5TokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def t5_encoder(seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=4 + len(LETTERS), d_model=2 * HIDDEN, d_kv=8, d_ff=37, num_layers=1,
                                   num_heads=2)).eval()


def tiny_flux_transformer(seed: int = 0):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                                  num_attention_heads=2, joint_attention_dim=2 * HIDDEN, pooled_projection_dim=HIDDEN,
                                  guidance_embeds=False, axes_dims_rope=(4, 2, 2)).eval()


def flux_pipeline(scheduler, folder: Path):
    """FluxPipeline: tiny Flux transformer + tiny CLIP + tiny T5, tokenizers built offline."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline(scheduler=scheduler, vae=tiny_vae(), text_encoder=clip_text_model(),
                        tokenizer=clip_tokenizer(folder), text_encoder_2=t5_encoder(), tokenizer_2=t5_tokenizer(),
                        transformer=tiny_flux_transformer())
    pipe.set_progress_bar_config(disable=True)
    return pipe
