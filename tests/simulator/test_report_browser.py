"""index.html rendered by a real headless browser: something is drawn and the table is there.

Needs Debian's ``chromium`` (or ``chromium-headless-shell``); ``.ci/run`` installs it. Where
no browser is installed the tests are skipped, saying so.
"""

import shutil
import subprocess

import numpy as np
import pytest

BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome", "headless_shell")
BROWSER = next((path for path in map(shutil.which, BROWSERS) if path), None)
pytestmark = pytest.mark.skipif(
    BROWSER is None,
    reason=f"no headless browser installed (looked for {', '.join(BROWSERS)} on PATH; .ci/run installs "
           "Debian's chromium)")


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
    assert dom.count("<img ") == 5
