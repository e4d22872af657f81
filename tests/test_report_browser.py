"""Open report.html in headless Chromium and check that every figure loads (skipped without chromium).

The report itself has no JavaScript; the test loads a copy with a small probe
script that marks <body> once every <img> is complete with a non-zero natural
size, then reads the marker back from ``--dump-dom``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pifskit.cli import main
from pifskit.report import FIGURES


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")

PROBE = """<script>
(function () {
  function mark() {
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; });
    document.body.setAttribute('data-img-total', String(imgs.length));
    document.body.setAttribute('data-img-loaded', String(ok.length));
    document.body.setAttribute('data-img-widths', ok.map(function (i) { return i.naturalWidth; }).join(','));
  }
  window.addEventListener('load', mark);
})();
</script>"""


def _flags(profile: Path) -> list[str]:
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            f"--user-data-dir={profile}"]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("browser") / "pifs-report"
    assert main(["report", "--out", str(out)]) == 0
    return out


def test_every_figure_loads_in_chromium(report_dir, tmp_path):
    page = report_dir / "report.html"
    probe = report_dir / "report_probe.html"  # same folder, same relative context as the real page
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    proc = subprocess.run(_flags(tmp_path / "profile") + ["--virtual-time-budget=5000", "--dump-dom",
                                                          probe.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    total = re.search(r'data-img-total="(\d+)"', dom)
    loaded = re.search(r'data-img-loaded="(\d+)"', dom)
    assert total and loaded, "probe did not run: " + dom[:500]
    assert int(total.group(1)) == len(FIGURES) + 1  # + the sampling-steps section's figure
    assert int(loaded.group(1)) == len(FIGURES) + 1
    widths = [int(w) for w in re.search(r'data-img-widths="([\d,]*)"', dom).group(1).split(",")]
    assert all(w >= 600 for w in widths)
    assert "Key numbers" in dom and "Per-step geometry" in dom


def test_report_screenshot_is_not_blank(report_dir, tmp_path):
    shot = tmp_path / "report.png"
    proc = subprocess.run(_flags(tmp_path / "profile") + ["--hide-scrollbars", "--window-size=1200,3000",
                                                          f"--screenshot={shot}", "--virtual-time-budget=5000",
                                                          (report_dir / "report.html").resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from matplotlib.image import imread

    img = imread(shot)[..., :3]
    assert img.shape[:2] == (3000, 1200)
    assert img.std() > 0.1  # text, tables and figures rendered, not an empty page
