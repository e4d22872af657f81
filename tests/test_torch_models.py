"""Small DiT / U-Net: shapes, attention maps, patchify, adaLN-zero init, parameterisations."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pifskit import PifsError
from pifskit.torch.models import (
    DiT,
    DiTConfig,
    UNetConfig,
    build_model,
    count_parameters,
    default_config,
    make_config,
    prediction_to_x0,
    timestep_embedding,
    training_target,
)

torch.set_num_threads(1)

TINY_DIT = {"width": 32, "depth": 2, "heads": 4}
TINY_UNET = {"base_channels": 8, "groups": 4}


@pytest.mark.parametrize("arch,overrides", [("dit", TINY_DIT), ("unet", TINY_UNET)])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 16, 16)])
def test_output_shape_and_time_inputs(arch, overrides, shape):
    torch.manual_seed(0)
    model = build_model(default_config(arch, shape, **overrides))
    x = torch.randn(3, *shape)
    for t in (torch.tensor([0, 500, 999]), torch.tensor([0.5, 10.25, 999.0]), 7, 3.5):
        assert model(x, t).shape == x.shape


@pytest.mark.parametrize("arch,overrides", [("dit", TINY_DIT), ("unet", TINY_UNET)])
def test_zero_initialised_output_layer(arch, overrides):
    # adaLN-zero (DiT) / zero-init output conv (U-Net): a fresh model predicts exactly 0
    model = build_model(default_config(arch, (1, 8, 8), **overrides))
    assert torch.count_nonzero(model(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]))) == 0


def _perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_attention_maps_row_stochastic():
    torch.manual_seed(1)
    cfg = DiTConfig(image_size=16, in_channels=1, patch_size=4, width=32, depth=3, heads=2)
    model = _perturbed(DiT(cfg))
    x = torch.randn(5, 1, 16, 16)
    out, maps = model(x, torch.arange(5) * 100, return_attention=True)
    assert len(maps) == 3
    for A in maps:
        assert A.shape == (5, 2, cfg.num_patches, cfg.num_patches)
        assert (A >= 0).all()
        torch.testing.assert_close(A.sum(-1), torch.ones(5, 2, cfg.num_patches), rtol=0, atol=1e-5)
    # the same maps are stored when requested, and the output is the plain forward's
    model.store_attention = True
    out2 = model(x, torch.arange(5) * 100)
    torch.testing.assert_close(out, out2)
    for A, B in zip(maps, model.attention_maps):
        torch.testing.assert_close(A, B)


def test_attention_map_matches_independent_softmax():
    torch.manual_seed(2)
    cfg = DiTConfig(image_size=8, in_channels=1, patch_size=2, width=16, depth=1, heads=2)
    model = _perturbed(DiT(cfg))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    _, (A,) = model(x, t, return_attention=True)
    blk = model.blocks[0]
    c = model.t_embed(t.float())
    sh1, sc1 = blk.ada(c).chunk(6, dim=-1)[:2]
    h = blk.norm1(model.patchify(x) + model.pos) * (1 + sc1[:, None]) + sh1[:, None]
    q, k, _ = blk.attn.qkv(h).chunk(3, dim=-1)
    q, k = q.reshape(2, 16, 2, 8)[:, :, 1], k.reshape(2, 16, 2, 8)[:, :, 1]  # head 1
    logits = q @ k.transpose(1, 2) / np.sqrt(8)
    ref = torch.exp(logits - logits.amax(-1, keepdim=True))
    ref = ref / ref.sum(-1, keepdim=True)
    torch.testing.assert_close(A[:, 1], ref, rtol=1e-5, atol=1e-6)


def test_unpatchify_inverts_patch_tokens():
    cfg = DiTConfig(image_size=12, in_channels=3, patch_size=4, width=16, depth=1, heads=2)
    model = DiT(cfg)
    x = torch.randn(2, 3, 12, 12)
    tok = model.patch_tokens(x)
    assert tok.shape == (2, 9, 48)
    torch.testing.assert_close(model.unpatchify(tok), x, rtol=0, atol=0)
    # token 1 is the patch in row 0, column 1 (row-major order)
    torch.testing.assert_close(tok[:, 1].reshape(2, 4, 4, 3).permute(0, 3, 1, 2), x[:, :, 0:4, 4:8])


def test_sincos_and_learned_pos_emb_and_bad_configs():
    cfg = DiTConfig(image_size=8, patch_size=2, width=16, depth=1, heads=2, pos_emb="learned")
    m = DiT(cfg)
    assert any(n == "pos" for n, _ in m.named_parameters())
    with pytest.raises(PifsError):
        DiTConfig(image_size=10, patch_size=4)
    with pytest.raises(PifsError):
        DiTConfig(width=30, heads=4)
    with pytest.raises(PifsError):
        UNetConfig(image_size=10, channel_mult=(1, 2, 2))
    with pytest.raises(PifsError):
        make_config({"arch": "vit"})
    with pytest.raises(PifsError):
        make_config({"arch": "dit", "nonsense": 1})
    with pytest.raises(PifsError):
        build_model(default_config("dit", (1, 8, 8), **TINY_DIT))(torch.randn(2, 1, 9, 9), 0)


@pytest.mark.parametrize("arch,overrides", [("dit", TINY_DIT), ("unet", TINY_UNET)])
def test_config_roundtrip_and_parameter_count(arch, overrides):
    cfg = default_config(arch, (1, 28, 28), prediction="v", **overrides)
    assert cfg["prediction"] == "v_prediction"
    torch.manual_seed(0)
    a = build_model(cfg)
    torch.manual_seed(0)
    b = build_model(dict(cfg))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert count_parameters(a) == sum(p.numel() for p in a.parameters())
    assert a.config.to_dict() == cfg


def test_default_sizes_are_comparable():
    dit = build_model(default_config("dit", (1, 28, 28)))
    unet = build_model(default_config("unet", (1, 28, 28)))
    n_dit, n_unet = count_parameters(dit), count_parameters(unet)
    assert 0.5 < n_dit / n_unet < 2.0


def test_timestep_embedding_values():
    e = timestep_embedding(torch.tensor([0.0, 2.0]), 8)
    torch.testing.assert_close(e[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))
    freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    ref = np.concatenate([np.cos(2 * freqs), np.sin(2 * freqs)])
    np.testing.assert_allclose(e[1].numpy(), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_target_and_x0_conversion_are_inverse(prediction):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 1, 4, 4, generator=g), torch.randn(6, 1, 4, 4, generator=g)
    phi = torch.rand(6, generator=g) * 1.4 + 0.05
    a, s = torch.cos(phi), torch.sin(phi)
    x = a.view(-1, 1, 1, 1) * x0 + s.view(-1, 1, 1, 1) * eps
    target = training_target(prediction, x0, eps, a, s)
    torch.testing.assert_close(prediction_to_x0(prediction, target, x, a, s), x0, rtol=1e-5, atol=1e-5)
