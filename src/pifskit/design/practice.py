"""Theory vs practice: each published design choice beside the value pifskit derives (sources:
docs/design.md#theory-vs-practice-measured-with-pifskit-010). Each row: practice, published, derived, inputs,
comparison ("ratio" derived / published, or "rms_log_sigma" for step lists) and its value.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from .._json import fmt_num
from ..chains import AYS_SIGMAS, ays_chain, ays_sigmas, karras_chain
from ..schedules import get_schedule
from ..spectra import Spectrum, powerlaw
from .offset import cosine_offset_for_bits
from .shift import powerlaw_shift, simple_diffusion_shift
from .steps import optimal_steps, rms_log_sigma, w2_surrogate
from .weighting import (
    IMAGENET_STD,
    effective_gamma,
    fitted_gamma,
    pixel_variance_from_std,
)

#: published values (see reference-values.md / docs/design.md for sources)
PUBLISHED = {
    "cosine_offset": 0.008,
    "simple_diffusion_resolution": 256,
    "sd3_alpha": 3.0,
    "sd3_resolution": 1024,
    "sd3_base_resolution": 256,
    "min_snr_gamma": 5.0,
    "ays_sd15": AYS_SIGMAS["sd15"][:10].tolist(),
}

SOURCES = {
    "cosine offset": "Nichol & Dhariwal, ICML 2021",
    "resolution shift (VP)": "Hoogeboom, Heek & Salimans, simple diffusion, ICML 2023",
    "resolution shift (rectified flow)": "Esser et al., SD3, 2024",
    "Min-SNR gamma": "Hang et al., ICCV 2023",
    "AYS SD1.5 10 steps": "Sabour, Fidler & Kreis, ICML 2024",
}


def _row(practice: str, published, derived, inputs: str, comparison: str, value: float, source: str) -> dict:
    return {"practice": practice, "published": published, "derived": derived, "inputs": inputs,
            "comparison": comparison, "value": value, "source": SOURCES[source]}


def practice_table(*, image_exponent: float = 2.0, latent_exponent: float = 1.5, latent_resolution: int = 64,
                   latent_channels: int = 4, latent_variance: float = 1.0, steps: int = 10,
                   latent_spectrum: Spectrum | None = None) -> list[dict[str, Any]]:
    """The theory-vs-practice rows (JSON-ready dicts; lists of floats for step lists)."""
    off = cosine_offset_for_bits(8, 1000)
    rows = [_row("cosine offset", PUBLISHED["cosine_offset"], off.offset,
                 "T = 1000, 8-bit data in [-1, 1]: first level s_1 = sqrt(beta_1) = bin 2/255 = 1/127.5 "
                 f"(published s = 0.008 gives s_1 = {off.published_first_noise:.5f})",
                 "ratio", off.offset / PUBLISHED["cosine_offset"], "cosine offset")]

    pv_img = pixel_variance_from_std(IMAGENET_STD)
    R = PUBLISHED["simple_diffusion_resolution"]
    sh = powerlaw_shift(R, 64, image_exponent, 3, pv_img)
    pub = simple_diffusion_shift(R, 64)
    rows.append(_row("resolution shift (VP)", pub, sh.logsnr_shift,
                     f"logSNR shift {R}^2 vs 64^2; power-law spectrum |k|^-{image_exponent:g}, 3 channels, "
                     f"pixel variance {pv_img:.4f}; top eigenvalue ratio {sh.top / sh.base_top:.3f} "
                     f"(pixel-count ratio {(R / 64) ** 2:g})",
                     "ratio", sh.logsnr_shift / pub, "resolution shift (VP)"))

    R3, R30 = PUBLISHED["sd3_resolution"], PUBLISHED["sd3_base_resolution"]
    sh3 = powerlaw_shift(R3, R30, image_exponent, 3, pv_img)
    rows.append(_row("resolution shift (rectified flow)", PUBLISHED["sd3_alpha"], sh3.timestep_shift,
                     f"timestep shift alpha {R3}^2 vs {R30}^2; power-law |k|^-{image_exponent:g}; "
                     f"idealised sqrt(m/n) = {sh3.idealised_timestep_shift:g}",
                     "ratio", sh3.timestep_shift / PUBLISHED["sd3_alpha"], "resolution shift (rectified flow)"))

    g = effective_gamma(Spectrum(np.full(3, pv_img), name="ImageNet per-pixel variance"))
    g_fit = fitted_gamma(powerlaw(64, 3, image_exponent, pv_img))
    rows.append(_row("Min-SNR gamma", PUBLISHED["min_snr_gamma"], g,
                     f"gamma = 1 / lambda_eff, lambda_eff = mean (2 std)^2 = {pv_img:.4f} from ImageNet std "
                     f"(0.229, 0.224, 0.225); soft-min fit to W(l) of a 64x64x3 power-law |k|^-{image_exponent:g} "
                     f"spectrum: gamma = {g_fit:.2f}",
                     "ratio", g / PUBLISHED["min_snr_gamma"], "Min-SNR gamma"))

    sd = get_schedule("sd")
    sp = latent_spectrum if latent_spectrum is not None else powerlaw(latent_resolution, latent_channels,
                                                                       latent_exponent, latent_variance)
    opt = optimal_steps(sd, sp, steps, start="marginal")  # the theory's criterion III (AYS comparison)
    ays = ays_chain("sd15", steps, sd)
    kar = karras_chain(sd, steps, 7.0)
    rows.append(_row(f"AYS SD1.5 {steps} steps",
                     ays_sigmas("sd15", steps)[:-1].tolist(),  # the published values, not a round trip
                     opt.sigmas[:-1].tolist(),
                     f"W2-optimal {steps} noisy levels (then 0) between SD1.5's sigma_max {opt.sigma_max:.3f} and "
                     f"sigma_min {opt.sigma_min:.4f}; spectrum {sp.name}, mean variance {sp.pixel_variance:.3g}; "
                     f"W2: derived {opt.w2:.3f}, AYS {w2_surrogate(ays, sp):.3f}, "
                     f"Karras rho=7 {w2_surrogate(kar, sp):.3f}; "
                     f"Karras RMS log-sigma to AYS {rms_log_sigma(kar.sigmas, ays.sigmas):.3f}",
                     "rms_log_sigma", rms_log_sigma(opt.sigmas, ays.sigmas), "AYS SD1.5 10 steps"))
    return rows


def _fmt(v: Any) -> str:
    return fmt_num([float(x) for x in v], ".3f") if isinstance(v, (list, tuple, np.ndarray)) else fmt_num(v)


def practice_table_html(rows: list[dict[str, Any]]) -> str:
    """An HTML <table> fragment of :func:`practice_table`'s rows (all text escaped)."""
    head = ("practice", "published", "derived", "comparison", "inputs", "source")
    out = ['<table class="pifskit-design">', "<thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>",
           "<tbody>"]
    for r in rows:
        cmp_text = f"{r['comparison'].replace('_', ' ')} = {float(r['value']):.3f}"
        cells = [r["practice"], _fmt(r["published"]), _fmt(r["derived"]), cmp_text, r["inputs"], r.get("source", "")]
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)
