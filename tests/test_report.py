"""`vaekit report`: one self-contained HTML page per run, checked as a file and in a real
headless browser (issue 16)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.conftest import tiny_config
from vaekit.cli import main
from vaekit.training import train

SECTIONS = [
    "Configuration",
    "Training curves",
    "Evaluation (test split)",
    "KL per latent dimension",
    "Samples (prior, T = 1)",
    "Reconstructions",
    "Interpolations",
    "Traversals of the most active dimensions",
    "Latent space",
    "Generation metrics",
]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    cfg = tiny_config("mnist", pixels="dynamic-binary", epochs=2)
    cfg.train.limit = 3000
    run = train(cfg, tmp_path_factory.mktemp("run") / "run", progress=False)
    res = CliRunner().invoke(main, ["report", str(run), "--quality-n", "600"])
    assert res.exit_code == 0, res.output
    return run / "report.html"


def _data_uris(page: str) -> list[str]:
    return re.findall(r'src="(data:image/png;base64,[^"]+)"', page)


def test_the_report_is_one_file_with_every_section(report):
    page = report.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page, title
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page
    for uri in _data_uris(page):
        im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        im.load()
        assert im.width > 20 and im.height > 20
    # the generation metrics of the shipped MNIST feature network are in it
    assert "FD" in page and "real: training vs test images (floor)" in page
    assert "ex-post GMM" in page and "reconstructions of the test images" in page


def _browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    _browser() is None, reason="no headless browser (Debian's chromium; .ci/run installs it)"
)
def test_the_report_renders_in_a_headless_browser(report, tmp_path):
    """Chromium loads the page with no console error, decodes every image (naturalWidth > 0)
    and draws something that is not blank."""
    probe = report.read_text().replace(
        "</body>",
        "<script>window.addEventListener('load',()=>{const bad=[...document.images]"
        ".filter(i=>!(i.complete&&i.naturalWidth>0)).length;"
        "document.body.setAttribute('data-images',document.images.length+':'+bad);});"
        "</script></body>",
    )
    page = tmp_path / "probe.html"
    page.write_text(probe)
    flags = [
        _browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
    ]
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    counts = re.search(r'data-images="(\d+):(\d+)"', dom.stdout)
    assert counts, dom.stderr[-2000:]
    total, broken = int(counts.group(1)), int(counts.group(2))
    assert total == len(_data_uris(report.read_text())) and broken == 0
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()],
        capture_output=True,
        timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 10  # text, plots and grids, not a blank page
