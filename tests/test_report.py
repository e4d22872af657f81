"""`pifskit report`: files written, numbers equal to the JSON and to independent re-computation."""

from __future__ import annotations

import base64
import json
import math
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from pifskit import PifsError
from pifskit.cli import main
from pifskit.report import FIGURES, build_report, fmt_number, lookup

from test_cli_geometry import (  # the same independent formulas as the CLI tests
    as_floats,
    classical_ky,
    direct_boundary,
    direct_Lambda,
    direct_lambda_2star,
    direct_steps,
    run_cli,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects <img> attributes, data-key cells (with their text) and section ids."""

    def __init__(self):
        super().__init__()
        self.imgs: list[dict] = []
        self.cells: list[dict] = []
        self.sections: list[str] = []
        self._cell: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "td" and "data-key" in a:
            self._cell = {"key": a["data-key"], "value": a["data-value"], "text": ""}
        elif tag == "section" and "id" in a:
            self.sections.append(a["id"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(self._cell)
            self._cell = None


def parse_page(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


@pytest.fixture(scope="module")
def default_report(tmp_path_factory):
    """`pifskit report` with no options but --out (the embedded defaults)."""
    out = tmp_path_factory.mktemp("report") / "pifs-report"
    code = main(["report", "--out", str(out)])
    assert code == 0
    return out, json.loads((out / "report.json").read_text())


def test_default_report_files(default_report):
    out, data = default_report
    assert (out / "report.html").is_file() and (out / "report.json").is_file()
    names = [data["files"]["figures"][spec.key] for spec in FIGURES]
    assert len(names) == len(FIGURES) == 6 and all(names)
    assert data["files"]["figures"]["sampling_steps"] == {"levels": "sampling_steps-levels.png"}
    names.append("sampling_steps-levels.png")
    for name in names:
        raw = (out / name).read_bytes()
        assert raw.startswith(PNG_MAGIC)
        assert len(raw) > 10_000, name


def test_pngs_are_non_trivial(default_report):
    from matplotlib.image import imread

    out, data = default_report
    for name in [*(data["files"]["figures"][spec.key] for spec in FIGURES), "sampling_steps-levels.png"]:
        img = imread(out / name)[..., :3]
        h, w = img.shape[:2]
        assert h >= 300 and w >= 600
        assert img.std() > 0.05, name  # not blank
        colours = np.unique((img.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
        assert len(colours) > 50, name  # lines, text, shading: many distinct colours
        assert (img.mean(axis=2) < 0.5).mean() > 0.005, name  # some dark ink (axes, text)


def test_default_inputs(default_report):
    _, data = default_report
    inp, sm = data["inputs"], data["summary"]
    assert inp["schedule"] == "sd" and inp["chain"] == "trailing-10" and inp["patch"] == 8
    assert inp["spectrum_meta"] == {"resolution": 64, "exponent": 2.0,
                                    "pixel_variance": float(np.mean((2 * np.array([0.229, 0.224, 0.225])) ** 2))}
    assert sm["n_steps"] == 10 and sm["d"] == 12288 and sm["lands_clean"] is True
    assert data["chain"]["timesteps"] == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]


def test_report_numbers_match_independent_recomputation(default_report):
    _, data = default_report
    ab = as_floats(data["chain"]["alpha_bar"])
    st, sm = data["steps"], data["summary"]
    ref = direct_steps(ab)
    for key in ("c", "d", "L_star", "lambda_star"):
        np.testing.assert_allclose(as_floats(st[key]), ref[key], rtol=1e-9, atol=1e-12)
    assert sm["lambda_2star"] == pytest.approx(direct_lambda_2star(ab), rel=1e-9)
    assert sm["regime_boundary_step"] == direct_boundary(ab)
    assert sm["L_star_first"] == st["L_star"][0] and sm["L_star_last"] == st["L_star"][-1]

    sp = data["spectrum"]
    vals, mult = as_floats(sp["eigenvalues_distinct"]), np.asarray(sp["multiplicity"])
    assert mult.sum() == sm["d"]
    ev = np.repeat(vals, mult)
    assert ev.mean() == pytest.approx(np.mean((2 * np.array([0.229, 0.224, 0.225])) ** 2), rel=1e-12)  # 0.20432
    ex = as_floats(data["lyapunov"]["exponents"])
    np.testing.assert_allclose(ex, direct_Lambda(ab, ev), rtol=1e-9, atol=1e-12)
    assert sm["kaplan_yorke"] == pytest.approx(classical_ky(ex), rel=1e-9)
    assert sm["n_positive_exponents"] == int((ex > 0).sum()) == sm["n_above_lambda_2star"]
    assert sm["exponent_sum"] == pytest.approx(ex.sum(), rel=1e-9)

    # Lambda curve on the stored grid
    cu = data["curves"]
    np.testing.assert_allclose(as_floats(cu["Lambda"]), direct_Lambda(ab, as_floats(cu["lambda"])),
                               rtol=1e-9, atol=1e-11)
    # release logSNR and the releasing step: l_i < -log(lambda) <= l_{i+1}
    rel = as_floats(sp["release_logsnr"])
    np.testing.assert_allclose(rel, -np.log(vals), rtol=1e-12)
    l = as_floats(data["chain"]["logsnr"])
    for r, k in zip(rel, sp["release_step"]):
        if 0 <= k < sm["n_steps"]:
            assert l[k] < r <= l[k + 1]
    released = np.asarray(st["released"])
    assert released.sum() + sm["released_before_chain"] + sm["released_never"] == sm["d"]


def test_report_agrees_with_geometry_and_lyapunov_commands(default_report, capsys):
    _, data = default_report
    code, out, _ = run_cli(["geometry", "--json"], capsys)
    geo = json.loads(out)
    code2, out2, _ = run_cli(["lyapunov", "--json"], capsys)
    lya = json.loads(out2)
    assert code == code2 == 0
    assert geo["alpha_bar"] == data["chain"]["alpha_bar"]
    for key in ("c", "d", "L_star", "lambda_star"):
        assert geo[key] == data["steps"][key]
    assert geo["lambda_2star"] == data["summary"]["lambda_2star"]
    assert geo["regime_boundary_step"] == data["summary"]["regime_boundary_step"]
    assert lya["exponents"] == data["lyapunov"]["exponents"]
    assert lya["kaplan_yorke"] == data["summary"]["kaplan_yorke"]


def test_html_numbers_equal_json(default_report):
    out, data = default_report
    page = parse_page(out / "report.html")
    keys = {c["key"] for c in page.cells}
    from pifskit.report.html import KEY_NUMBERS

    for _, path, _ in KEY_NUMBERS:
        if path is not None:
            assert path in keys, path
    assert any(k.startswith("steps.L_star[") for k in keys)
    assert len(page.cells) > 100
    for cell in page.cells:
        value = lookup(data, cell["key"])
        assert json.loads(cell["value"]) == value, cell["key"]
        assert cell["text"] == fmt_number(value), cell["key"]
        if isinstance(value, float):  # the displayed digits are the number, independent of the formatter
            assert float(cell["text"]) == pytest.approx(value, rel=5e-6, abs=1e-300)
        elif value == "inf":
            assert cell["text"] == "\u221e"


def test_html_embeds_exactly_the_png_files(default_report):
    out, data = default_report
    page = parse_page(out / "report.html")
    assert len(page.imgs) == len(FIGURES) + 1  # + the sampling-steps section's figure
    for img in page.imgs:
        src = img["src"]
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (out / img["data-file"]).read_bytes()
        assert img.get("alt")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<script" not in html.lower()  # plain HTML + CSS
    assert "http://" not in html and "https://" not in html  # nothing external: opens offline
    for spec in FIGURES:
        assert escape(spec.caption) in html  # every figure has its caption


def test_report_cli_json_summary(tmp_path, capsys):
    code, out, err = run_cli(["report", "--out", str(tmp_path / "r"), "--steps", "5", "--resolution", "16",
                              "--patch", "4", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    data = json.loads(Path(res["json"]).read_text())
    assert res["summary"] == data["summary"]
    assert Path(res["html"]).is_file() and len(res["figures"]) == 7  # 6 + the sampling-steps figure
    assert all(Path(f).is_file() for f in res["figures"])


def test_report_text_summary_prints_html_path(tmp_path, capsys):
    code, out, err = run_cli(["report", "--out", str(tmp_path / "r"), "--steps", "4", "--resolution", "8",
                              "--patch", "4"], capsys)
    assert code == 0
    last = out.strip().splitlines()[-1]
    assert last.startswith("report: ") and last.endswith("report.html")
    assert Path(last.split(": ", 1)[1]).is_file()
    assert "lambda**" in out and "KY dimension" in out


def test_block_mass_matches_dense_jacobian(tmp_path):
    """M_off of the report against the dense Jacobian of the Gaussian-optimal denoiser on an 8x8 image."""
    from pifskit.chains import make_chain
    from pifskit.schedules import get_schedule
    from pifskit.spectra import powerlaw

    sched = get_schedule("sd")
    chain = make_chain(sched, 6)
    spec = powerlaw(8, 1, 2.0, 0.5)
    data = build_report(sched, chain, spec, tmp_path, patch=4)
    m_off = as_floats(data["steps"]["M_off"])
    grid = np.asarray(spec.power_grid)
    H, W, p = 8, 8, 4
    patch_id = (np.arange(H)[:, None] // p * (W // p) + np.arange(W)[None, :] // p).ravel()
    same = patch_id[:, None] == patch_id[None, :]
    for i, l in enumerate(as_floats(data["chain"]["logsnr"])[:-1]):
        a2, s2 = 1 / (1 + math.exp(-l)), 1 / (1 + math.exp(l))
        gain = math.sqrt(a2) * grid / (a2 * grid + s2)  # D(x) = a Sigma (a^2 Sigma + s^2)^-1 x, diagonal in Fourier
        J = np.empty((H * W, H * W))
        for j in range(H * W):
            e = np.zeros(H * W)
            e[j] = 1.0
            J[:, j] = np.fft.ifft2(gain * np.fft.fft2(e.reshape(H, W))).real.ravel()
        expected = 1.0 - (J[same] ** 2).sum() / (J**2).sum()
        assert m_off[i] == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert (np.diff(m_off) < 0).all()  # cross-patch mass falls as the noise level drops


def test_report_without_power_grid_skips_block_mass(tmp_path, capsys):
    eig = tmp_path / "eigs.npy"
    np.save(eig, np.array([20.0, 5.0, 2.0, 1.0, 0.5, 0.1, 0.01]))
    out = tmp_path / "r"
    (out).mkdir()
    (out / "e_block_mass.png").write_bytes(b"stale")  # a stale figure from an earlier run must go
    code, stdout, err = run_cli(["report", "--out", str(out), "--spectrum", f"file:{eig}"], capsys)
    assert code == 0
    data = json.loads((out / "report.json").read_text())
    assert data["block_mass"]["available"] is False and data["block_mass"]["note"]
    assert data["steps"]["M_off"] is None and data["summary"]["M_off_first"] is None
    assert data["files"]["figures"]["block_mass"] is None
    assert not (out / "e_block_mass.png").exists()
    page = parse_page(out / "report.html")
    assert len(page.imgs) == 5 + 1  # 5 built-in (no block mass) + the sampling-steps figure
    assert "no stationary power grid" in (out / "report.html").read_text()
    assert "note:" in stdout
    ex = as_floats(data["lyapunov"]["exponents"])
    assert data["summary"]["kaplan_yorke"] == pytest.approx(classical_ky(ex), rel=1e-9)


def test_extra_sections_extension_point(tmp_path):
    from pifskit.chains import make_chain
    from pifskit.report.figures import render_png
    from pifskit.schedules import get_schedule
    from pifskit.spectra import powerlaw
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    fig.subplots().plot([0, 1], [1, 0])
    png = render_png(fig)
    sched = get_schedule("sd")
    chain = make_chain(sched, 5)
    spec = powerlaw(8, 1)
    section = {"key": "design", "title": "Design criteria", "data": {"gamma": 4.87, "steps": [1, 2]},
               "html": f'<p class="design">gamma = {fmt_number(4.87)}</p>',
               "figures": [{"key": "w2", "title": "W2 error", "caption": "look here", "png": png}]}
    data = build_report(sched, chain, spec, tmp_path, patch=4, extra_sections=[section])
    stored = json.loads((tmp_path / "report.json").read_text())
    assert stored["design"] == {"gamma": 4.87, "steps": [1, 2]} == data["design"]
    assert stored["files"]["figures"]["design"] == {"w2": "design-w2.png"}
    assert (tmp_path / "design-w2.png").read_bytes() == png
    page = parse_page(tmp_path / "report.html")
    assert "design" in page.sections
    assert len(page.imgs) == len(FIGURES) + 1
    html = (tmp_path / "report.html").read_text()
    assert '<p class="design">gamma = 4.87</p>' in html
    assert html.index('id="design"') > html.index('id="steps"')  # appended after the built-in sections

    for bad in ({"key": "summary", "title": "x", "html": "", "data": {}},    # collides with a report key
                {"key": "two words", "title": "x", "html": "", "data": {}},  # not an identifier
                {"key": "x", "title": "x", "html": ""},                      # no data
                {"key": "x", "title": "x", "html": "", "data": [1]}):        # data not a dict
        with pytest.raises(PifsError):
            build_report(sched, chain, spec, tmp_path, patch=4, extra_sections=[bad])


def test_report_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    code, out, err = run_cli(["report", "--out", str(f)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_report_long_chain_and_pure_noise_start(tmp_path):
    """A 1000-step chain from pure noise (rectified flow): the page abbreviates the step table, JSON keeps all."""
    from pifskit.chains import make_chain
    from pifskit.schedules import get_schedule
    from pifskit.spectra import powerlaw

    sched = get_schedule("sd3")
    chain = make_chain(sched, 1000, "uniform")
    data = build_report(sched, chain, powerlaw(16, 1), tmp_path, patch=4, lambda_points=64, map_points=32)
    assert data["summary"]["starts_from_noise"] is True
    assert data["steps"]["lambda_star"][0] == "inf"
    assert len(data["steps"]["L_star"]) == 1000
    assert data["summary"]["lambda_2star"] == pytest.approx(1.0, abs=0.02)  # continuum limit
    page = parse_page(tmp_path / "report.html")
    step_rows = {c["key"].split("[")[1] for c in page.cells if c["key"].startswith("steps.c[")}
    assert len(step_rows) == 80
    html = (tmp_path / "report.html").read_text()
    assert "all steps are in report.json" in html


# -- the analyze-model page goes through the same writer ------------------------------------------

def _model_result(lower_bound: bool) -> dict:
    n, k = 4, 3
    ls = np.array([0.05, 0.3, 0.7, 1.0])
    return {
        "model": {"prediction_type": "epsilon", "sample_shape": [1, 4, 4]},
        "chain": {"name": "trailing-4", "n_steps": n},
        "d": 16, "patch": 2, "n_blocks": 4, "dtype": "float32", "block_norms_method": "exact",
        "steps": {"logsnr": np.array([-3.0, -1.0, 1.0, 3.0]), "c": np.zeros(n), "d": np.ones(n),
                  "contraction_threshold": ls, "block_max": np.array([0.5, 0.2, 0.8, 0.9]),
                  "block_max_spread": np.full(n, 0.01), "block_max_frob": np.array([0.6, 0.25, 0.9, 1.1]),
                  "contractive": np.array([0.5, 0.2, 0.8, 0.9]) < ls, "offdiag_mass": np.array([0.4, 0.3, 0.2, 0.1]),
                  "surrogate_offdiag_mass": np.array([0.5, 0.3, 0.2, 0.1]),
                  "surrogate_gaussian_block_max": np.array([0.1, 0.25, 0.85, 1.0])},
        "regime_boundary_step": 2,
        "numerical": {"k": k, "d": 16, "trajectories": 2, "exponents": [0.5, 0.2, 0.1 if lower_bound else -0.9],
                      "spread": [0.01] * k, "kaplan_yorke": 3.0 if lower_bound else 2.33333,
                      "kaplan_yorke_spread": 0.0, "kaplan_yorke_is_lower_bound": lower_bound},
        "analytic": {"spectrum": "powerlaw:2", "d": 16, "exponents_top": np.array([0.4, 0.1, -0.2]),
                     "kaplan_yorke": 2.5, "kaplan_yorke_top_k": 2.5},
    }


def test_model_page_same_writer_captions_labels_and_ky_lower_bound(tmp_path):
    from pifskit.report.model import _FIGURES, write_model_report
    from pifskit.report.page import new_figure

    paths = write_model_report(_model_result(True), tmp_path)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    data = json.loads((tmp_path / "report.json").read_text())
    assert paths["html"].endswith("report.html") and (tmp_path / "report.png").read_bytes().startswith(PNG_MAGIC)
    # same skeleton as the geometry report: sections, embedded figures equal to their files, captions
    page = parse_page(tmp_path / "report.html")
    assert len(page.imgs) == len(_FIGURES) == 3
    for img in page.imgs:
        assert base64.b64decode(img["src"].split(",", 1)[1]) == (tmp_path / img["data-file"]).read_bytes()
    for _, title, panel, caption in _FIGURES:
        assert escape(caption) in html and escape(title) in html
        fig, ax = new_figure()
        panel(ax, _model_result(True))
        assert ax.get_ylabel() and ax.get_xlabel()  # every panel labels both axes
    assert '<section id="advice">' in html and "raise --k" in html
    # KY of a lower bound reads ">= 3" (never "KY 3"); the JSON keeps the flag
    assert data["numerical"]["kaplan_yorke_is_lower_bound"] is True
    assert "\u2265 3" in html and "KY 3" not in html
    for cell in page.cells:
        assert json.loads(cell["value"]) == lookup(data, cell["key"]), cell["key"]
    # steps 0 and 2: L_B >= L*; only step 0 also above the Gaussian-optimal norm
    assert data["summary"]["steps_not_contractive"] == [0, 2]
    assert data["summary"]["steps_above_gaussian_optimal"] == [0]
    write_model_report(_model_result(False), tmp_path)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "= 2.333" in html and "\u2265 2.333" not in html and "raise --k" not in html
