"""Design criteria derived from the PIFS geometry (theory section 6).

* :mod:`.offset` -- criterion I, finest end: the cosine offset releasing the quantisation bin;
* :mod:`.shift` -- criterion I, coarse end: the resolution shift (logSNR and rectified-flow alpha);
* :mod:`.weighting` -- criterion II: error-sensitivity loss weights and the effective Min-SNR gamma;
* :mod:`.steps` -- criterion III: W2-optimal sampling steps (defect equidistribution), per solver;
* :mod:`.solvers` -- closed-form output law of deterministic solvers on Gaussian data;
* :mod:`.baselines` -- the comparison schedules (trailing ... KL-optimal, beta, DMN, AYS, flow family);
* :mod:`.practice` -- the theory-vs-practice table.

numpy/scipy only.
"""

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
