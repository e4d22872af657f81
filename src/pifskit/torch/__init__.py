"""pifskit's torch layer: denoiser adapters, analysis, models and training (submodules imported explicitly)."""
