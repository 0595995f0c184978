"""The report in a real headless browser: Chromium renders it and the screenshot is not blank."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from moco import load_config, pretrain
from moco.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(tmp_path, tiny_idx):
    cfg = load_config("default", [
        "model.width=0.125", "model.queue_size=128", "optim.batch_size=64", "optim.epochs=2",
        "eval.knn_every=1", "eval.knn_k=20", f"data.source={tiny_idx}",
        f"run.out_dir={tmp_path}", "run.name=r", "run.progress=false",
    ])  # fmt: skip
    run = pretrain(cfg).run_dir
    page = write_report(run, max_points=64)
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,2400",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert img.shape == (2400, 1100)
    # images were drawn: many non-white pixels and real contrast, not an empty page
    assert (img < 200).mean() > 0.05 and img.std() > 30
