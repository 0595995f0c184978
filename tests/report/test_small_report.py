"""The report of a run on a user's own small folder: 60 images in 3 class folders, 6 held
out (the first-hour case of issue 16, where t-SNE's perplexity 30 failed), class names in
the legend, one line per stage, and atomic writes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from moco import pretrain
from moco.config import load_config
from moco.report import figures, page, write_report

from ..conftest import TINY_OVERRIDES

CLASSES = ("cat", "dog", "owl")


def make_folder(root: Path, per_class: int = 20) -> Path:
    """root/<class>/i.png: 24x24 PNGs, each class a strong colour over noise."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 90, (24, 24, 3), dtype=np.uint8)
            a[..., c] += 160
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def small_run(root: Path, holdout: float) -> Path:
    """One epoch on the 60-image folder, named as a new user would (a bare path)."""
    folder = make_folder(root / "photos")
    cfg = load_config(
        "default",
        [*TINY_OVERRIDES, f"data.source={folder}", f"data.holdout_fraction={holdout}",
         "optim.batch_size=16", "model.queue_size=32", "eval.knn_k=3", "augment.size=24",
         f"run.out_dir={root}", "run.name=run"],
    )  # fmt: skip
    return pretrain(cfg).run_dir


@pytest.fixture(scope="module")
def run_6_held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_run(tmp_path_factory.mktemp("six"), 0.1)  # 2 of each class held out


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _recording(monkeypatch: pytest.MonkeyPatch, name: str, draw: bool = True) -> list[Any]:
    """Calls of ``figures.NAME`` (args and kwargs), still drawn unless ``draw`` is False
    (then an empty file stands for the figure)."""
    calls: list[Any] = []
    real = getattr(figures, name)

    def record(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))
        if draw:
            real(*args, **kwargs)
        else:
            next(a for a in args if isinstance(a, Path)).write_bytes(b"")  # the figure's file

    monkeypatch.setattr(figures, name, record)
    return calls


def test_report_of_six_held_out_images_names_classes_and_says_each_stage(
    run_6_held_out, monkeypatch, tmp_path
):
    run = shutil.copytree(run_6_held_out, tmp_path / "run")
    scatter = _recording(monkeypatch, "embedding_scatter")
    grid = _recording(monkeypatch, "retrieval_grid")
    lines: list[str] = []
    path = write_report(run, log=lines.append)  # 8 queries asked, 6 held-out images
    assert path == run / "report.html"
    assert sorted(p.name for p in (run / "report").iterdir()) == [
        "curves.png", "health.png", "retrieval.png", "tsne.png",
    ]  # fmt: skip
    assert not list(run.glob(".report-*"))  # the temporary folder is gone
    # one line per stage, numbered
    assert [line.split(":")[0].split(" (")[0] for line in lines] == [
        f"report {i}/{page.STAGES}" for i in range(1, 7)
    ]
    assert "features of 6 held-out and 54 training images" in lines[2]
    assert "t-SNE of 6 held-out (ringed) and 54 training images (perplexity 19.7)" in lines[3]
    assert "retrieval: 6 held-out queries, 8 nearest training images each" in lines[4]
    # the t-SNE gets the folder names, and all 60 points with the held-out ones ringed
    (xy, labels, names, _, title), kw = scatter[0]
    assert names == list(CLASSES) and xy.shape == (60, 2)
    assert np.bincount(labels).tolist() == [20, 20, 20] and kw["ringed"].sum() == 6
    (queries, query_labels, neighbours, *_), kw = grid[0]
    assert queries.shape == (6, 24, 24, 3) and neighbours.shape == (6, 8, 24, 24, 3)
    assert kw["class_names"] == list(CLASSES) and sorted(query_labels) == [0, 0, 1, 1, 2, 2]
    text = path.read_text()
    assert f"{run_6_held_out.parent / 'photos'} (detected: folder, 3 class sub-folders)" in text
    assert "The held-out split has only 6 images" in text


def test_retrieval_and_tsne_cope_with_fewer_images_than_asked(
    run_6_held_out, monkeypatch, tmp_path
):
    run = shutil.copytree(run_6_held_out, tmp_path / "run")
    grid = _recording(monkeypatch, "retrieval_grid", draw=False)
    lines: list[str] = []
    # more neighbours than training images; max_points 8 leaves 8 points: no t-SNE
    write_report(run, max_points=8, k=100, log=lines.append)
    (_, _, neighbours, neighbour_labels, _), _ = grid[0]
    assert neighbours.shape[:2] == (6, 54) and neighbour_labels.shape == (6, 54)
    assert "t-SNE skipped: 8 images in all, fewer than 10" in lines[3]
    assert not (run / "report" / "tsne.png").exists()
    assert "No t-SNE: the data set has 8 images in all" in (run / "report.html").read_text()


def test_held_out_split_of_twelve_gets_a_perplexity_below_its_size(tmp_path, monkeypatch):
    run = small_run(tmp_path, 0.2)  # 4 of each class held out: 12 < perplexity 30
    scatter = _recording(monkeypatch, "embedding_scatter")
    lines: list[str] = []
    write_report(run, log=lines.append)
    assert "t-SNE of 12 held-out images (perplexity 3.67)" in lines[3]
    (xy, labels, names, *_), kw = scatter[0]
    assert xy.shape == (12, 2) and kw["ringed"] is None and names == list(CLASSES)


def test_a_failed_report_leaves_nothing_and_the_previous_report_intact(
    run_6_held_out, monkeypatch, tmp_path
):
    run = shutil.copytree(run_6_held_out, tmp_path / "run")
    before = _tree(run)

    def broken(*args: Any, **kwargs: Any) -> None:
        next(a for a in args if isinstance(a, Path)).write_bytes(b"half a PNG")
        raise RuntimeError("figure failed")

    with monkeypatch.context() as m:  # no report yet: nothing is left behind
        m.setattr(figures, "retrieval_grid", broken)
        with pytest.raises(RuntimeError, match="figure failed"):
            write_report(run, log=lambda _: None)
    assert _tree(run) == before and not list(run.glob(".report-*"))

    write_report(run, log=lambda _: None)
    done = _tree(run)
    assert "report.html" in done and "report/tsne.png" in done
    with monkeypatch.context() as m:  # a report exists: it stays as it was, byte for byte
        m.setattr(figures, "embedding_scatter", broken)
        with pytest.raises(RuntimeError, match="figure failed"):
            write_report(run, log=lambda _: None)
    assert _tree(run) == done and not list(run.glob(".report-*"))
