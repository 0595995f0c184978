"""The report in a real headless browser: Chromium renders it and the screenshot is not blank."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moco import pretrain
from moco.report import write_report

DEBIAN_CHROMIUM = Path("/usr/bin/chromium")


def _chromium() -> str:
    """The browser to run; a skip only on a machine that has none and is not CI (.ci/run
    installs Debian's), so CI cannot pass this test without rendering the page."""
    if DEBIAN_CHROMIUM.exists():
        return str(DEBIAN_CHROMIUM)
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is not None:
        return found
    if os.environ.get("CI"):
        pytest.fail("CI is set and chromium is missing: .ci/run installs Debian's chromium")
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path, tiny_config):
    chromium = _chromium()
    run = pretrain(tiny_config("optim.epochs=2", "run.name=r")).run_dir
    page = write_report(run, max_points=64)
    shot = tmp_path / "shot.png"
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,2400",
         f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # a browser that is there but broken is a failure, never a skip
    assert done.returncode == 0 and shot.is_file(), f"{chromium} failed:\n{done.stderr}"
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (2400, 1100)
    # images were drawn: many non-white pixels and real contrast, not an empty page
    assert (img < 200).mean() > 0.05 and img.std() > 30
