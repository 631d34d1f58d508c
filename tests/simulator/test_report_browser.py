"""index.html rendered by a real headless browser: something is drawn and the table is there.

Needs Debian's ``chromium`` (or ``chromium-headless-shell``); ``.ci/run`` installs it. Where
no browser is installed the tests are skipped, saying so.

The first screen of the report is saved for a person to look at, at the path the test prints
(:data:`SCREENSHOT`); ``LIFELONG_SCREENSHOT_REPORT=path/to/index.html`` shoots that report
instead of the test's own tiny run (e.g. the rotated-MNIST comparison of docs/getting-started.md).
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome", "headless_shell")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason=f"no headless browser installed (looked for {', '.join(BROWSERS)} on PATH; .ci/run installs "
           "Debian's chromium)")


SCREENSHOT = Path(__file__).resolve().parents[2] / "reports" / "screenshots" / "report-first-screen.png"
"""Where the first screen goes: reports/ holds generated files, which git ignores."""


def browse(page, profile, *args, timeout=90):
    """Run the browser headless on ``page`` with a fresh profile and nothing reaching the network."""
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
               f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_the_page_renders_with_its_summary_table(digits_run, tmp_path):
    from PIL import Image

    page = digits_run / "index.html"
    shot = tmp_path / "shot.png"
    done = browse(page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2400")
    assert shot.is_file(), f"no screenshot; the browser said:\n{done.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    packed = pixels.astype(np.int32)
    colours = np.unique((packed[..., 0] << 16) | (packed[..., 1] << 8) | packed[..., 2])
    non_white = (pixels.min(axis=2) < 240).mean()
    # a blank or unstyled page has a handful of colours; the report's heatmaps and bars have
    # hundreds, and ink covers a good share of the first screens
    assert len(colours) > 300 and non_white > 0.05, (len(colours), non_white)

    dom = browse(page, tmp_path / "profile-dom", "--dump-dom").stdout
    assert '<section id="summary">' in dom and "<table>" in dom
    assert "<th>Final acc. ↑</th>" in dom and "<th>Forgetting ↓</th>" in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # shown as text, never run
    # every embedded figure is an image of the page (2 heatmaps, stream, adaptation, transfer, and
    # any the report adds)
    assert dom.count("<img ") == page.read_text().count("data:image/png;base64,") >= 5


def test_the_first_screen_is_saved_for_a_person_to_look_at(digits_run, tmp_path, capsys):
    from PIL import Image

    page = Path(os.environ.get("LIFELONG_SCREENSHOT_REPORT") or digits_run / "index.html")
    shot = tmp_path / "first-screen.png"
    done = browse(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,800")
    assert shot.is_file(), f"no screenshot; the browser said:\n{done.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (800, 1280) and (pixels.min(axis=2) < 240).mean() > 0.02  # not a blank page
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
    with capsys.disabled():  # shown without -s: the point is that a person finds it
        print(f"\nfirst screen of {page}: {SCREENSHOT}")
    # the first screen opens with the answers: the dom of the same page has them first
    dom = browse(page, tmp_path / "profile-dom", "--dump-dom").stdout
    summary = dom.index('<section id="summary">')
    assert "As learned (k = 0):" in dom[summary:summary + 2000]
