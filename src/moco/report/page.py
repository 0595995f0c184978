"""``moco report RUN_DIR``: ``report.html`` (PNGs embedded) plus the PNGs in ``report/``.

Works for any held-out size: the t-SNE's perplexity follows the number of points
(at most 30, the common default, and at most a third of the points, below sklearn's
limit of the point count); a held-out split of fewer than :data:`MIN_TSNE_POINTS`
images is filled out with training images (drawn ringed apart: the held-out ones), and
a data set of fewer images in all has no t-SNE, with a note. The retrieval grid shows
at most as many queries as there are held-out images and neighbours as training
images. The legend and the grid name the classes by the data set's class names (folder
names, CIFAR's meta file, ...), by number where it has none.

Written atomically: the figures and the page are made in a hidden temporary folder of
the run and moved into place when all of them exist, so a report that fails leaves
nothing behind and the previous report as it was. Each stage prints one line (``log``)
as it starts: on a loaded machine a report takes minutes, mostly features and t-SNE.
"""

from __future__ import annotations

import base64
import html
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from moco.augment.views import build_eval_transform
from moco.data.sources import FASHION_MNIST_CLASSES
from moco.encoders.base import as_encoder
from moco.engine.metrics import read_metrics
from moco.errors import NotARunError
from moco.eval.features import extract_features
from moco.report import figures
from moco.runs.load import EvalSetup, load_for_eval

MIN_TSNE_POINTS = 10  # fewer points in all: no t-SNE (a 2-D map of so few says nothing)
MAX_PERPLEXITY = 30.0
STAGES = 6  # the lines write_report prints

Log = Callable[[str], None]


def say(line: str) -> None:
    """The default ``log`` of :func:`write_report`: a line on stdout, at once."""
    print(line, flush=True)


def _results(run_dir: Path) -> list[dict[str, str]]:
    """Every number with the settings that produced it."""
    rows = []
    result = run_dir / "result.json"
    if result.exists():
        r = json.loads(result.read_text())
        knn = r["knn"]
        settings = f"k={knn['k']}, t={knn['t']}, {knn['features']} features; memory = train split"
        for name, key in (("kNN top-1 (random init)", "knn_top1_random_init"),
                          ("kNN top-1 (pre-trained)", "knn_top1")):  # fmt: skip
            if r.get(key) is not None:
                rows.append({"result": name, "value": f"{r[key]:.4f}", "settings": settings,
                             "data": f"{r['data']}; {r['held_out']}"})  # fmt: skip
    for f in sorted(run_dir.glob("knn-*.json")):  # from `moco knn`
        r = json.loads(f.read_text())
        who = "random init" if r["random_init"] else f"epoch {r['epoch']}"
        rows.append(
            {
                "result": f"kNN top-1 ({who})",
                "value": f"{r['top1']:.4f}",
                "settings": f"k={r['k']}, t={r['t']}, {r['features']} features; "
                f"memory = {r['memory']}",
                "data": f"{r['data']}; {r['test_split']}",
            }
        )
    for kind, label in (("lincls", "linear"), ("finetune", "fine-tuned")):
        for f in sorted(run_dir.glob(f"{kind}-*.json")):
            r = json.loads(f.read_text())
            settings = ", ".join(f"{k} {v}" for k, v in r["protocol"].items())
            who = "random init" if r["random_init"] else f"epoch {r['epoch']}"
            rows.append(
                {
                    "result": f"{label} top-1 / top-5 ({who})",
                    "value": f"{r['test_top1']:.4f} / {r['test_top5']:.4f}",
                    "settings": f"{settings}; epoch {r['selected_epoch']} selected on "
                    f"{r['validation']}",
                    "data": f"{r['data']}; test: {r['test_split']}",
                }
            )
    return rows


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def write_report(
    run_dir: str | Path,
    max_points: int = 2000,
    queries: int = 8,
    k: int = 8,
    seed: int = 0,
    log: Log = say,
) -> Path:
    """Write ``RUN_DIR/report.html`` and ``RUN_DIR/report/*.png``; returns the page's path.

    ``max_points`` held-out images at most in the t-SNE, ``queries`` rows of ``k``
    neighbours in the retrieval grid (fewer where the data has fewer). ``log`` gets one
    line per stage. Atomic (module docstring): on any failure the run directory is left
    as it was.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").exists():
        raise NotARunError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    stage = _Stages(log)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=run_dir))
    try:
        out = tmp / "report"
        out.mkdir()
        records = read_metrics(run_dir)
        stage(f"training curves ({len(records)} metric records)")
        figures.curves(records, out / "curves.png")
        if any(r["kind"] == "health" for r in records):
            figures.health(records, out / "health.png")
        stage("reading the checkpoint and its data")
        s = load_for_eval(run_dir)
        sections = _feature_figures(s, out, max_points, queries, k, seed, stage)
        stage("page")
        page = _page(run_dir, s, out, sections, _health(records, out))
        (tmp / "report.html").write_text(page)
        _publish(tmp, run_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return run_dir / "report.html"


class _Stages:
    """Numbers the stage lines and says how long the report has taken so far."""

    def __init__(self, log: Log) -> None:
        self.log, self.n, self.start = log, 0, time.monotonic()

    def __call__(self, what: str) -> None:
        self.n += 1
        elapsed = time.monotonic() - self.start
        self.log(f"report {self.n}/{STAGES} ({elapsed:.0f} s): {what}")


def _publish(tmp: Path, run_dir: Path) -> None:
    """Move ``tmp/report/`` and ``tmp/report.html`` into ``run_dir`` by renames (the
    previous ``report/`` goes into ``tmp``, which the caller removes); the page last, so
    it appears only once its figures are in place."""
    if (run_dir / "report").exists():
        (run_dir / "report").rename(tmp / "previous")
    (tmp / "report").rename(run_dir / "report")
    os.replace(tmp / "report.html", run_dir / "report.html")


@dataclass
class _Sections:
    """What the page says about the feature figures."""

    tsne: str  # the paragraph of the t-SNE section (why it is missing, when it is)
    tsne_drawn: bool
    retrieval: str  # the paragraph above the retrieval grid


def class_names(s: EvalSetup) -> list[str]:
    """The data set's class names by label; numbers where the source has none (an IDX
    directory of Fashion-MNIST, recognised by its name, gets that data set's names)."""
    n = max(s.data.num_classes, 0)
    if s.data.classes is not None and len(s.data.classes) >= n:
        return list(s.data.classes)
    if n == 10 and "ashion" in s.data.name:
        return list(FASHION_MNIST_CLASSES)
    return [str(c) for c in range(n)]


def _feature_figures(
    s: EvalSetup, out: Path, max_points: int, queries: int, k: int, seed: int, stage: Log
) -> _Sections:
    """tsne.png (held-out features by class) and retrieval.png (nearest training images)."""
    encoder = as_encoder(s.encoder.eval())  # a ResNet or a ViT
    tf = build_eval_transform(s.size, s.mean, s.std, s.data.image_size)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(s.data.test_images), generator=g)[:max_points]
    n_train = len(s.data.train_images)
    stage(f"features of {len(pick)} held-out and {n_train} training images")
    with torch.no_grad():
        test = F.normalize(
            extract_features(encoder.forward_features, s.data.test_images[pick], tf), dim=1
        )
        train = F.normalize(
            extract_features(encoder.forward_features, s.data.train_images, tf), dim=1
        )
    labels = s.data.test_labels[pick].numpy()
    names = class_names(s)

    # t-SNE: the held-out images, filled out with training images when they are few
    points, point_labels, ringed = test, labels, np.ones(len(pick), bool)
    extra = 0
    if len(pick) < MIN_TSNE_POINTS:
        more = torch.randperm(n_train, generator=g)[: max(max_points - len(pick), 0)]
        extra = len(more)
        points = torch.cat([test, train[more]])
        point_labels = np.concatenate([labels, s.data.train_labels[more].numpy()])
        ringed = np.arange(len(points)) < len(pick)
    n = len(points)
    if n < MIN_TSNE_POINTS:
        stage(f"t-SNE skipped: {n} images in all, fewer than {MIN_TSNE_POINTS}")
        tsne = (
            f"No t-SNE: the data set has {n} images in all, fewer than {MIN_TSNE_POINTS}; "
            "a 2-D map of so few points says nothing."
        )
        drawn = False
    else:
        perplexity = min(MAX_PERPLEXITY, (n - 1) / 3)
        what = f"{len(pick)} held-out images"
        if extra:
            what = f"{len(pick)} held-out (ringed) and {extra} training images"
        stage(f"t-SNE of {what} (perplexity {perplexity:.3g})")
        from sklearn.manifold import TSNE

        xy = TSNE(
            n_components=2, init="pca", random_state=seed, perplexity=perplexity
        ).fit_transform(points.numpy())
        figures.embedding_scatter(
            xy, point_labels, names, out / "tsne.png",
            f"t-SNE of {what}\n(pooled backbone features, perplexity {perplexity:.3g})",
            ringed=ringed if extra else None,
        )  # fmt: skip
        colours = "coloured by class" if (point_labels >= 0).any() else "without labels"
        tsne = f"t-SNE of the pooled backbone features of {what}, {colours}."
        if extra:
            tsne += (
                f" The held-out split has only {len(pick)} images (fewer than "
                f"{MIN_TSNE_POINTS}), so training images fill the map out: pre-training "
                "saw them, without their labels."
            )
        drawn = True

    retrieval = _retrieval(s, test, train, pick, names, out, queries, k, stage)
    return _Sections(tsne, drawn, retrieval)


def _retrieval(
    s: EvalSetup,
    test: torch.Tensor,
    train: torch.Tensor,
    pick: torch.Tensor,
    names: list[str],
    out: Path,
    queries: int,
    k: int,
    stage: Log,
) -> str:
    """retrieval.png: held-out queries and their nearest training images; its caption."""
    labels = s.data.test_labels[pick].numpy()
    n_train = len(s.data.train_images)
    rows, k = min(queries, len(pick)), min(k, n_train)
    stage(f"retrieval: {rows} held-out queries, {k} nearest training images each")
    nn_idx = (test[:rows] @ train.t()).topk(k, dim=1).indices
    found = _pics(s.data.train_images[nn_idx.flatten()])
    figures.retrieval_grid(
        _pics(s.data.test_images[pick[:rows]]),
        labels[:rows],
        found.reshape(rows, k, *found.shape[1:]),
        s.data.train_labels[nn_idx].numpy(),
        out / "retrieval.png",
        class_names=names,
    )
    retrieval = (
        f"Each row: a held-out query (first column, named by its class), then its {k} "
        "nearest training images by cosine similarity of pooled backbone features; green "
        "frame: same class as the query, red: another."
    )
    if bool((labels < 0).all()):
        retrieval = (
            f"Each row: a held-out query (first column), then its {k} nearest training "
            "images by cosine similarity of pooled backbone features (the data has no labels "
            "to frame them by)."
        )
    return retrieval


def _pics(x: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) -> what imshow takes: (N, H, W) grey or (N, H, W, 3)."""
    arr = x.numpy()
    return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)


@dataclass
class _Health:
    warnings: str  # the detectors' warnings, for the top of the page ("" when none)
    section: str  # the "Run health" section


def _health(records: list[dict[str, Any]], out: Path) -> _Health:
    """The warnings box (each with its evidence and what to try) and the run-health
    section (docs/run-health.md says what each curve means)."""
    items = []
    for r in (r for r in records if r["kind"] == "warning"):
        evidence = ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in (r.get("evidence") or {}).items()
        )
        text = f"<b>{html.escape(str(r.get('detector', 'warning')))}</b> (step {r['step']}): "
        text += html.escape(str(r["message"]))
        if evidence:
            text += f"<br><small>evidence: {html.escape(evidence)}</small>"
        if r.get("advice"):
            text += f"<br><small>try: {html.escape(str(r['advice']))}</small>"
        items.append(f"<li>{text}</li>")
    warnings = ""
    if items:
        warnings = (
            '<div class="warn"><h2>Run health warnings</h2><ul>' + "".join(items) + "</ul>"
            "<p>Red lines in the run-health figure mark when each was raised; "
            "docs/run-health.md explains each detector.</p></div>"
        )
    if (out / "health.png").exists():
        section = (
            "<p>Measured every <code>run.log_every</code> steps on the logged step (the "
            "kNN-time points on the pooled backbone features). Healthy: loss well below its "
            "chance value, a positive logit clearly above the negatives' maximum, effective "
            "rank and dimension std far from 0. docs/run-health.md: what each curve means "
            f"and what each failure looks like.</p>{_img(out / 'health.png')}"
        )
    else:
        section = "<p>No run-health records: the run had <code>run.diagnostics=false</code>.</p>"
    return _Health(warnings, section)


def _page(run_dir: Path, s: EvalSetup, out: Path, sections: _Sections, health: _Health) -> str:
    """The self-contained HTML page (figures embedded)."""
    cfg = (run_dir / "config.yaml").read_text()
    columns = ("result", "value", "settings", "data")
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(r[c])}</td>" for c in columns) + "</tr>"
        for r in _results(run_dir)
    )
    tsne = f"<p>{html.escape(sections.tsne)}</p>"
    if sections.tsne_drawn:
        tsne += _img(out / "tsne.png")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>moco report: {html.escape(run_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
.warn {{ border: 2px solid #c33; background: #fff3f3; padding: 0 1em; }}
img {{ max-width: 100%; }} pre {{ background: #f6f6f6; padding: 1em; font-size: 12px; }}
</style></head><body>
<h1>moco run <code>{html.escape(run_dir.name)}</code></h1>
<p>Checkpoint <code>{html.escape(s.checkpoint)}</code>, epoch {html.escape(str(s.epoch))};
data: {html.escape(s.data.name)} ({len(s.data.train_images)} train, {len(s.data.test_images)}
held-out: {html.escape(s.data.held_out)}).</p>
{health.warnings}
<h2>Results</h2>
<table><tr><th>result</th><th>value</th><th>settings</th><th>data</th></tr>{rows}</table>
<h2>Training curves</h2>{_img(out / "curves.png")}
<h2>Run health</h2>{health.section}
<h2>Held-out features</h2>{tsne}
<h2>Nearest-neighbour retrieval</h2>
<p>{html.escape(sections.retrieval)}</p>
{_img(out / "retrieval.png")}
<h2>Config</h2><pre>{html.escape(cfg)}</pre>
</body></html>
"""
