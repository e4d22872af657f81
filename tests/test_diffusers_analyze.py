"""``pifskit analyze-model --diffusers``: tiny random SD (UNet2DConditionModel), SD3 and Flux pipelines saved with
save_pretrained, analysed end to end; the block norms agree with an independent ``jacrev`` of the
denoiser written out by hand from the raw diffusers parts; bad folders exit 2 with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from _tiny_diffusers import SD_KW, flux_pipeline, sd3_pipeline, sd_pipeline  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    PNDMScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextModel, CLIPTokenizer  # noqa: E402

from pifskit.cli import main  # noqa: E402

LATENT = 4  # analysed at a 4 x 4 x 4 latent: d = 64, patch 2 -> 4 blocks


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusers-models")
    torch.set_num_threads(1)
    sd = sd_pipeline(PNDMScheduler(**SD_KW, steps_offset=1, skip_prk_steps=True), root / "tok")
    sd.save_pretrained(root / "sd")  # SD 1.5's layout: PNDM scheduler, leading spacing, steps_offset 1
    sd.unet.save_pretrained(root / "unet-only")
    sd3 = sd3_pipeline(FlowMatchEulerDiscreteScheduler(shift=3.0), root / "tok3")
    sd3.save_pretrained(root / "sd3")
    flux = flux_pipeline(FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_image_seq_len=16,
                                                         max_image_seq_len=256), root / "tokf")
    flux.save_pretrained(root / "flux")
    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                         down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                         attention_head_dim=2, norm_num_groups=4, addition_embed_type="text_time",
                         addition_time_embed_dim=4, projection_class_embeddings_input_dim=8 + 6 * 4,
                         ).save_pretrained(root / "sdxl-unet")  # SDXL's added text / time conditioning
    (root / "not-a-model").mkdir()
    (root / "not-a-model" / "notes.txt").write_text("hello")
    return root


@pytest.fixture(autouse=True)
def _one_thread(torch_single_thread):
    yield


def analyze(capsys, tmp_path, *extra):
    rc = main(["analyze-model", *extra, "--steps", "2", "--k", "2", "--trajectories", "1", "--points", "1",
               "--latent-size", str(LATENT), "--out", str(tmp_path / "rep"), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def block_norms_np(J: np.ndarray, C: int = 4, H: int = LATENT, p: int = 2):
    """L_B = max_i sum_j ||J_ij||_2 and M_off over p x p patches (all channels), written out with numpy."""
    ids = np.arange(C * H * H).reshape(C, H // p, p, H // p, p).transpose(1, 3, 0, 2, 4).reshape(-1, C * p * p)
    spec = np.array([[np.linalg.norm(J[np.ix_(a, b)], 2) for b in ids] for a in ids])
    frob2 = np.array([[np.sum(J[np.ix_(a, b)] ** 2) for b in ids] for a in ids])
    return spec.sum(axis=1).max(), 1.0 - np.trace(frob2) / frob2.sum()


def x_init():
    return torch.randn((1, 4, LATENT, LATENT), generator=torch.Generator().manual_seed(0))[0]


def test_unet_pipeline_matches_independent_jacrev(folders, capsys, tmp_path):
    res = analyze(capsys, tmp_path, "--diffusers", str(folders / "sd"))
    assert res["d"] == 64 and "empty" not in res["model"]["conditioning"]
    assert res["model"]["conditioning"].startswith("prompt ''")
    # independent: diffusers' own DDIM timesteps for this config, the raw UNet, the text encoder's embedding
    ddim = DDIMScheduler.from_pretrained(folders / "sd" / "scheduler")
    ddim.set_timesteps(2)
    ts = ddim.timesteps.tolist()
    assert [int(t) for t in res["chain"]["timesteps"]] == ts == [501, 1]
    unet = UNet2DConditionModel.from_pretrained(folders / "sd" / "unet").eval()
    tok = CLIPTokenizer.from_pretrained(folders / "sd" / "tokenizer")
    te = CLIPTextModel.from_pretrained(folders / "sd" / "text_encoder").eval()
    ids = tok("", padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        emb = te(ids.input_ids)[0]
    ab = ddim.alphas_cumprod.double()

    def D(x, t):  # epsilon model -> x0 estimate (x - s eps) / a
        a, s = float(ab[t].sqrt()), float((1 - ab[t]).sqrt())
        eps = unet(x.reshape(1, 4, LATENT, LATENT), torch.tensor([float(t)]), encoder_hidden_states=emb).sample
        return ((x.reshape(1, 4, LATENT, LATENT) - s * eps) / a).reshape(-1)

    x0 = x_init().reshape(-1)
    J0 = torch.func.jacrev(lambda v: D(v, ts[0]))(x0).detach().double().numpy()
    lb, moff = block_norms_np(J0)
    assert res["steps"]["block_max"][0] == pytest.approx(lb, rel=1e-4)
    assert res["steps"]["offdiag_mass"][0] == pytest.approx(moff, rel=1e-3, abs=1e-6)
    # step 1 at the DDIM state x1 = a1 D0 + s1 (x0 - a0 D0) / s0
    with torch.no_grad():
        d0 = D(x0, ts[0]).double()
    a0, s0, a1, s1 = (float(v) for v in (ab[ts[0]].sqrt(), (1 - ab[ts[0]]).sqrt(), ab[ts[1]].sqrt(),
                                         (1 - ab[ts[1]]).sqrt()))
    x1 = (a1 * d0 + s1 * (x0.double() - a0 * d0) / s0).float()
    J1 = torch.func.jacrev(lambda v: D(v, ts[1]))(x1).detach().double().numpy()
    assert res["steps"]["block_max"][1] == pytest.approx(block_norms_np(J1)[0], rel=1e-3)


def test_sd3_transformer_matches_independent_jacrev(folders, capsys, tmp_path):
    res = analyze(capsys, tmp_path, "--diffusers", str(folders / "sd3"), "--prompt", "a cat")
    assert res["model"]["prediction_type"] == "flow" and res["model"]["conditioning"].startswith("prompt 'a cat'")
    fm = FlowMatchEulerDiscreteScheduler.from_pretrained(folders / "sd3" / "scheduler")
    fm.set_timesteps(2)
    tf = fm.sigmas[:2].double().tolist()  # diffusers' flow levels t' (shift 3 applied)
    pipe = StableDiffusion3Pipeline.from_pretrained(folders / "sd3", text_encoder_3=None, tokenizer_3=None)
    with torch.no_grad():
        emb, _, pooled, _ = pipe.encode_prompt("a cat", None, None, do_classifier_free_guidance=False)
    tr = SD3Transformer2DModel.from_pretrained(folders / "sd3" / "transformer").eval()

    def D(x, t):  # flow model on x_f = (1 - t) x0 + t e: x0 = x_f - t v; the VP state is x_f / r
        r = ((1 - t) ** 2 + t**2) ** 0.5
        xf = (x * r).reshape(1, 4, LATENT, LATENT)
        v = tr(hidden_states=xf, encoder_hidden_states=emb, pooled_projections=pooled,
               timestep=torch.tensor([t * 1000.0])).sample
        return (xf - t * v).reshape(-1)

    x0 = x_init().reshape(-1)
    assert tf[0] == 1.0
    lb0, _ = block_norms_np(torch.func.jacrev(lambda v: D(v, tf[0]))(x0).detach().double().numpy())
    assert res["steps"]["block_max"][0] == pytest.approx(lb0, rel=1e-4)
    with torch.no_grad():
        d0 = D(x0, tf[0]).double()
    t1 = tf[1]
    r1 = ((1 - t1) ** 2 + t1**2) ** 0.5
    x1 = ((1 - t1) / r1 * d0 + t1 / r1 * x0.double()).float()  # DDIM from pure noise: e = x0
    lb1, _ = block_norms_np(torch.func.jacrev(lambda v: D(v, t1))(x1).detach().double().numpy())
    assert res["steps"]["block_max"][1] == pytest.approx(lb1, rel=1e-3)


def test_flux_transformer_matches_independent_jacrev(folders, capsys, tmp_path):
    res = analyze(capsys, tmp_path, "--diffusers", str(folders / "flux"), "--prompt", "a cat")
    assert res["d"] == 64 and res["model"]["timestep_scale"] == 1.0
    # independent: diffusers' own scheduler at the pipeline's mu for a 4 x 4 latent (2 x 2 = 4 packed tokens)
    fm = FlowMatchEulerDiscreteScheduler.from_pretrained(folders / "flux" / "scheduler")
    fm.set_timesteps(2, mu=0.5 + (4 - 16) * (1.15 - 0.5) / (256 - 16))
    tf = fm.sigmas[:2].double().tolist()
    pipe = FluxPipeline.from_pretrained(folders / "flux")
    with torch.no_grad():
        emb, pooled, txt_ids = pipe.encode_prompt("a cat", None)
    tr = FluxTransformer2DModel.from_pretrained(folders / "flux" / "transformer").eval()
    img_ids = FluxPipeline._prepare_latent_image_ids(1, LATENT // 2, LATENT // 2, "cpu", torch.float32)

    def D(x, t):  # flow prediction on FluxPipeline's packed latents; the transformer gets t' itself
        r = ((1 - t) ** 2 + t**2) ** 0.5
        xf = (x * r).reshape(1, 4, LATENT, LATENT)
        packed = FluxPipeline._pack_latents(xf, 1, 4, LATENT, LATENT)
        v = tr(hidden_states=packed, timestep=torch.tensor([t]), encoder_hidden_states=emb, pooled_projections=pooled,
               txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        v = FluxPipeline._unpack_latents(v, LATENT, LATENT, 1)
        return (xf - t * v).reshape(-1)

    x0 = x_init().reshape(-1)
    assert tf[0] == 1.0
    lb0, moff0 = block_norms_np(torch.func.jacrev(lambda v: D(v, tf[0]))(x0).detach().double().numpy())
    assert res["steps"]["block_max"][0] == pytest.approx(lb0, rel=1e-4)
    assert res["steps"]["offdiag_mass"][0] == pytest.approx(moff0, rel=1e-3, abs=1e-6)
    with torch.no_grad():
        d0 = D(x0, tf[0]).double()
    t1 = tf[1]
    r1 = ((1 - t1) ** 2 + t1**2) ** 0.5
    x1 = ((1 - t1) / r1 * d0 + t1 / r1 * x0.double()).float()
    lb1, _ = block_norms_np(torch.func.jacrev(lambda v: D(v, t1))(x1).detach().double().numpy())
    assert res["steps"]["block_max"][1] == pytest.approx(lb1, rel=1e-3)


def test_unet_folder_without_text_encoder_uses_zeros_and_says_so(folders, capsys, tmp_path):
    res = analyze(capsys, tmp_path, "--diffusers", str(folders / "unet-only"))
    assert res["model"]["conditioning"].startswith("zeros")
    assert "no scheduler config" in res["model"]["notes"]
    # the model in float16: float32 in and out (the analysis' dtype), half-precision rounding inside
    from pifskit.torch.diffusers_models import load_diffusers_model

    m32, _ = load_diffusers_model(folders / "unet-only", resolution=LATENT)
    m16, info16 = load_diffusers_model(folders / "unet-only", resolution=LATENT, dtype="float16")
    assert info16["compute_dtype"] == "float16" and next(m16.model.parameters()).dtype == torch.float16
    x, t = x_init()[None], torch.tensor([500.0])
    with torch.no_grad():
        y32, y16 = m32(x, t), m16(x, t)
    assert y16.dtype == torch.float32
    err = float((y16 - y32).norm() / y32.norm())
    assert 1e-5 < err < 1e-2  # it did run in float16, and agrees to its rounding


@pytest.mark.parametrize("extra, message", [
    (["--diffusers", "{root}/missing"], "not a directory"),
    (["--diffusers", "{root}/not-a-model"], "not a diffusers model folder"),
    (["--diffusers", "{root}/sd", "--subfolder", "transformer"], "has no subfolder 'transformer'"),
    (["--diffusers", "{root}/sd/vae"], "unsupported diffusers model class 'AutoencoderKL'"),
    (["--diffusers", "{root}/unet-only", "--prompt", "a cat"], "--prompt needs the pipeline's text encoders"),
    (["--diffusers", "{root}/sd", "--model", "pifskit.torch.testing:tiny_dit"], "either --model or --diffusers"),
    ([], "give --model ENTRY or --diffusers PATH"),
])
def test_bad_diffusers_input_one_line_exit_2(folders, capsys, tmp_path, extra, message):
    argv = [a.replace("{root}", str(folders)) for a in extra]
    rc = main(["analyze-model", *argv, "--steps", "2", "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_sdxl_style_unet_gets_its_added_conditioning(folders, capsys, tmp_path):
    """An SDXL-style UNet (addition_embed_type 'text_time') needs text_embeds and time_ids: zeros and the
    analysed size; the same x0 estimate as the raw model called with them by hand."""
    from pifskit.torch.diffusers_models import load_diffusers_model

    res = analyze(capsys, tmp_path, "--diffusers", str(folders / "sdxl-unet"))
    assert res["model"]["conditioning"].startswith("zeros") and np.isfinite(res["steps"]["block_max"]).all()
    model, info = load_diffusers_model(folders / "sdxl-unet", resolution=LATENT)
    raw = UNet2DConditionModel.from_pretrained(folders / "sdxl-unet").eval()
    x = x_init()[None]
    t = torch.tensor([500.0])
    with torch.no_grad():
        want = raw(x, t, encoder_hidden_states=torch.zeros(1, 77, 16),
                   added_cond_kwargs={"text_embeds": torch.zeros(1, 8),
                                      "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]])}).sample
        torch.testing.assert_close(model(x, t), want)
