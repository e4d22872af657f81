"""Design criteria derived from the PIFS geometry (theory section 6): offset and shift (I), loss weighting (II),
sampling steps per solver (III), baselines and the theory-vs-practice table; numpy/scipy only (docs/design.md)."""

from .offset import (
    cosine_offset_for_bits,
    first_level_noise,
    first_level_sigma,
    solve_first_level,
)
from .practice import practice_table, practice_table_html
from .shift import powerlaw_shift, shift_from_images, shift_from_spectra
from .baselines import baseline_levels
from .steps import (
    SOLVERS,
    StepDesign,
    baseline_chains,
    optimal_steps,
    rms_log_sigma,
    score_levels,
    w2_of_sigmas,
    w2_surrogate,
)
from .weighting import design_weighting, loss_weights, min_snr_weights, sensitivity
