"""The theory-vs-practice table and its HTML fragment."""

import html.parser

import numpy as np
import pytest

from pifskit.chains import AYS_SIGMAS, karras_chain
from pifskit.design.offset import cosine_offset_for_bits
from pifskit.design.practice import practice_table, practice_table_html
from pifskit.design.shift import powerlaw_shift
from pifskit.design.steps import optimal_steps, rms_log_sigma
from pifskit.schedules import get_schedule
from pifskit.spectra import powerlaw

KEYS = {"practice", "published", "derived", "inputs", "comparison", "value", "source"}


@pytest.fixture(scope="module")
def rows():
    return practice_table()


def test_rows_and_keys(rows):
    assert [r["practice"] for r in rows] == ["cosine offset", "resolution shift (VP)",
                                             "resolution shift (rectified flow)", "Min-SNR gamma",
                                             "AYS SD1.5 10 steps"]
    for r in rows:
        assert KEYS <= set(r)
        assert np.isfinite(r["value"])


def test_rows_agree_with_the_criteria(rows):
    by = {r["practice"]: r for r in rows}
    off = by["cosine offset"]
    assert off["published"] == 0.008
    assert off["derived"] == pytest.approx(cosine_offset_for_bits(8, 1000).offset)
    assert off["value"] == pytest.approx(off["derived"] / 0.008)
    vp = by["resolution shift (VP)"]
    assert vp["published"] == pytest.approx(2 * np.log(64 / 256))
    assert vp["derived"] == pytest.approx(powerlaw_shift(256, 64, 2.0).logsnr_shift)
    rf = by["resolution shift (rectified flow)"]
    assert rf["published"] == 3.0
    assert rf["derived"] == pytest.approx(powerlaw_shift(1024, 256, 2.0).timestep_shift)
    g = by["Min-SNR gamma"]
    assert g["published"] == 5.0 and round(g["derived"], 1) == 4.9
    ays = by["AYS SD1.5 10 steps"]
    np.testing.assert_allclose(ays["published"], AYS_SIGMAS["sd15"][:10])
    opt = optimal_steps(get_schedule("sd"), powerlaw(64, 4, 1.5, 1.0), 10, start="marginal")
    np.testing.assert_allclose(ays["derived"], opt.sigmas[:-1])
    kar = karras_chain(get_schedule("sd"), 10)
    assert ays["comparison"] == "rms_log_sigma"
    assert ays["value"] == pytest.approx(rms_log_sigma(opt.sigmas, AYS_SIGMAS["sd15"][:10]))
    assert ays["value"] < rms_log_sigma(kar.sigmas, AYS_SIGMAS["sd15"][:10])


def test_html_fragment_is_well_formed_and_escaped(rows):
    frag = practice_table_html(rows)
    assert frag.startswith("<table") and frag.endswith("</table>")
    assert frag.count("<tr>") == len(rows) + 1
    assert "Nichol &amp; Dhariwal" in frag

    class P(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.cells = [], []

        def handle_starttag(self, tag, attrs):
            self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack.pop() == tag

        def handle_data(self, data):
            if self.stack and self.stack[-1] == "td":
                self.cells.append(data)

    p = P()
    p.feed(frag)
    assert p.stack == []
    assert "cosine offset" in p.cells
    evil = [dict(rows[0], practice="<script>x</script>")]
    assert "<script>" not in practice_table_html(evil)
