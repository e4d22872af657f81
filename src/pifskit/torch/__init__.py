"""pifskit's torch layer: denoiser adapters, analysis, models and training.

Import-light on purpose: submodules (``pifskit.torch.models``, ``.train``, ...) are
imported explicitly by their users.
"""
