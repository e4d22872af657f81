"""The report's sampling-steps section: the design beside every common list under one metric, equal to
`pifskit design steps` and to an independent scoring of the analysed chain."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pifskit.cli import main
from pifskit.cli._common import DEFAULT_PIXEL_VARIANCE
from pifskit.design.steps import score_levels
from pifskit.spectra import parse_spectrum

from test_report import parse_page


def _report(tmp_path, *args):
    out = tmp_path / "r"
    assert main(["report", "--out", str(out), "--resolution", "16", "--patch", "4", *args]) == 0
    return json.loads((out / "report.json").read_text()), out


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _report(tmp_path_factory.mktemp("steps"), "--steps", "8")


def test_design_row_is_lowest_and_the_chain_is_marked(small):
    data, out = small
    sec = data["sampling_steps"]
    rows = sec["rows"]
    assert rows[0]["name"] == "pifskit" and sec["solver"] == "ddim" and sec["n_steps"] == 8
    assert sec["converged"] is True and sec["iterations"] > 0
    assert all(rows[0]["w2"] <= r["w2"] for r in rows)
    assert [r["w2"] for r in rows[1:]] == sorted(r["w2"] for r in rows[1:])
    for r in rows:
        assert r["w2_ratio"] == pytest.approx(r["w2"] / rows[0]["w2"], rel=1e-12)
        assert len(r["sigmas"]) == 9 and r["sigmas"][-1] == 0.0
    marked = [r["name"] for r in rows if r["this_chain"]]
    assert marked == ["trailing"]  # the report's default spacing, found among the baselines
    assert np.allclose([r for r in rows if r["this_chain"]][0]["sigmas"], data["chain"]["sigmas"], rtol=1e-12)
    assert data["files"]["figures"]["sampling_steps"] == {"levels": "sampling_steps-levels.png"}
    assert (out / "sampling_steps-levels.png").read_bytes()[:4] == b"\x89PNG"
    page = parse_page(out / "report.html")
    assert "sampling_steps" in page.sections
    keys = {c["key"] for c in page.cells}
    assert {f"sampling_steps.rows[{i}].w2" for i in range(len(rows))} <= keys


def test_section_equals_design_steps_command(small, capsys):
    data, _ = small
    rows = {r["name"]: r for r in data["sampling_steps"]["rows"]}
    code = main(["design", "steps", "--schedule", "sd", "--steps", "8", "--spectrum", "powerlaw:2", "--resolution",
                 "16", "--channels", "3", "--pixel-variance", str(DEFAULT_PIXEL_VARIANCE), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert rows["pifskit"]["sigmas"] == pytest.approx(out["sigmas"], rel=1e-12)
    assert rows["pifskit"]["timesteps"] == out["timesteps"]
    assert rows["pifskit"]["w2"] == pytest.approx(out["w2"], rel=1e-12)
    assert set(rows) - {"pifskit"} == set(out["baselines"])
    for name, b in out["baselines"].items():
        assert rows[name]["w2"] == pytest.approx(b["w2"], rel=1e-12)
        assert rows[name]["sw2"] == pytest.approx(b["sw2"], rel=1e-12)


def test_a_chain_outside_the_baselines_is_scored_independently(tmp_path):
    levels = [14.6, 3.0, 1.0, 0.2, 0.0]
    data, out = _report(tmp_path, "--sigmas", ",".join(map(str, levels)))
    rows = data["sampling_steps"]["rows"]
    mine = [r for r in rows if r["this_chain"]]
    assert len(mine) == 1 and mine[0]["name"] not in ("pifskit", "trailing")
    spectrum = parse_spectrum("powerlaw:2", 16, 3, DEFAULT_PIXEL_VARIANCE)
    assert mine[0]["w2"] == pytest.approx(score_levels(np.array(levels), spectrum, "ddim"), rel=1e-9)
    assert rows[0]["w2"] <= mine[0]["w2"]
    assert "below the analysed chain" in (out / "report.html").read_text()


def test_a_chain_that_does_not_land_is_not_scored(tmp_path):
    data, out = _report(tmp_path, "--sigmas", "14.6,3,1,0.2")
    assert not any(r["this_chain"] for r in data["sampling_steps"]["rows"])
    assert "does not land at sigma = 0, so it is not scored" in (out / "report.html").read_text()


def test_flow_schedule_section(tmp_path):
    data, out = _report(tmp_path, "--schedule", "sd3", "--steps", "6")
    sec = data["sampling_steps"]
    assert all(r["sigmas"][0] == "inf" for r in sec["rows"])  # every list starts at pure noise
    assert sec["flow_sigmas"][0] == 1.0 and len(sec["flow_sigmas_unshifted"]) == 6 and sec["flow_shift"] == 3.0
    assert all(sec["rows"][0]["w2"] <= r["w2"] for r in sec["rows"])
    assert "set_timesteps(sigmas=...)" in (out / "report.html").read_text()


def test_no_design_leaves_the_section_out(tmp_path):
    data, out = _report(tmp_path, "--steps", "4", "--no-design")
    assert "sampling_steps" not in data and "design" not in data
    assert not (out / "sampling_steps-levels.png").exists()
