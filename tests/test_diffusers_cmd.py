"""``pifskit diffusers-kwargs`` on a pipeline folder with dynamic shifting (Flux-style)."""

import json

import pytest

from pifskit.cli import main


def _flux_folder(root):
    for sub in ("scheduler", "transformer", "vae"):
        (root / sub).mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0, "use_dynamic_shifting": True}))
    (root / "transformer" / "config.json").write_text(json.dumps({"patch_size": 1}))
    (root / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [1, 2, 3, 4]}))


def test_flux_folder_mu_and_notes_name_the_pipeline(tmp_path, capsys):
    pytest.importorskip("transformers")
    _flux_folder(tmp_path / "flux")
    rc = main(["diffusers-kwargs", "--diffusers-config", str(tmp_path / "flux"), "--steps", "4",
               "--height", "512", "--width", "768", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["pipeline"] == "FluxPipeline"
    # Flux packs 2 x 2 latent patches: (512 / 8 / 2) (768 / 8 / 2) = 32 * 48 tokens; diffusers' calculate_shift
    L = 32 * 48
    assert out["mu"] == pytest.approx(0.5 + (1.15 - 0.5) * (L - 256) / (4096 - 256), rel=1e-12)
    import inspect

    from diffusers import FluxPipeline

    if "mu" in inspect.signature(FluxPipeline.__call__).parameters:
        assert out["kwargs"]["mu"] == pytest.approx(out["mu"])
    else:  # the pipeline computes mu itself: the note names it (it said "SimpleNamespace" before)
        assert "mu" not in out["kwargs"]
        assert any(n.startswith("FluxPipeline computes mu itself") for n in out["notes"])
