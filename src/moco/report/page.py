"""``moco report RUN_DIR``: ``report.html`` (PNGs embedded) plus the PNGs in ``report/``."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

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
    run_dir: str | Path, max_points: int = 2000, queries: int = 8, k: int = 8, seed: int = 0
) -> Path:
    """Write ``RUN_DIR/report.html`` and ``RUN_DIR/report/*.png``; returns the page's path."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").exists():
        raise NotARunError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    figures.curves(read_metrics(run_dir), out / "curves.png")
    s = load_for_eval(run_dir)
    _feature_figures(s, out, max_points, queries, k, seed)
    path = run_dir / "report.html"
    path.write_text(_page(run_dir, s, out, k))
    return path


def _feature_figures(
    s: EvalSetup, out: Path, max_points: int, queries: int, k: int, seed: int
) -> None:
    """tsne.png (held-out features by class) and retrieval.png (nearest training images)."""
    encoder = as_encoder(s.encoder.eval())  # a ResNet or a ViT
    tf = build_eval_transform(s.size, s.mean, s.std, s.data.image_size)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(s.data.test_images), generator=g)[:max_points]
    with torch.no_grad():
        test = F.normalize(
            extract_features(encoder.forward_features, s.data.test_images[pick], tf), dim=1
        )
        train = F.normalize(
            extract_features(encoder.forward_features, s.data.train_images, tf), dim=1
        )
    labels = s.data.test_labels[pick].numpy()
    names = [str(c) for c in range(s.data.num_classes)]
    if s.data.num_classes == 10 and "ashion" in s.data.name:
        names = list(FASHION_MNIST_CLASSES)

    from sklearn.manifold import TSNE

    xy = TSNE(n_components=2, init="pca", random_state=seed, perplexity=30).fit_transform(
        test.numpy()
    )
    figures.embedding_scatter(
        xy,
        labels,
        names,
        out / "tsne.png",
        f"t-SNE of {len(pick)} held-out images (pooled backbone features)",
    )

    sim = test[:queries] @ train.t()
    nn_idx = sim.topk(k, dim=1).indices
    found = _pics(s.data.train_images[nn_idx.flatten()])
    figures.retrieval_grid(
        _pics(s.data.test_images[pick[:queries]]),
        labels[:queries],
        found.reshape(queries, k, *found.shape[1:]),
        s.data.train_labels[nn_idx].numpy(),
        out / "retrieval.png",
    )


def _pics(x: torch.Tensor) -> np.ndarray:
    """uint8 (N, C, H, W) -> what imshow takes: (N, H, W) grey or (N, H, W, 3)."""
    arr = x.numpy()
    return arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)


def _page(run_dir: Path, s: EvalSetup, out: Path, k: int) -> str:
    """The self-contained HTML page (figures embedded)."""
    cfg = (run_dir / "config.yaml").read_text()
    columns = ("result", "value", "settings", "data")
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(r[c])}</td>" for c in columns) + "</tr>"
        for r in _results(run_dir)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>moco report: {html.escape(run_dir.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 14px; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
img {{ max-width: 100%; }} pre {{ background: #f6f6f6; padding: 1em; font-size: 12px; }}
</style></head><body>
<h1>moco run <code>{html.escape(run_dir.name)}</code></h1>
<p>Checkpoint <code>{html.escape(s.checkpoint)}</code>, epoch {html.escape(str(s.epoch))};
data: {html.escape(s.data.name)} ({len(s.data.train_images)} train, {len(s.data.test_images)}
held-out: {html.escape(s.data.held_out)}).</p>
<h2>Results</h2>
<table><tr><th>result</th><th>value</th><th>settings</th><th>data</th></tr>{rows}</table>
<h2>Training curves</h2>{_img(out / "curves.png")}
<h2>Held-out features</h2>{_img(out / "tsne.png")}
<h2>Nearest-neighbour retrieval</h2>
<p>Each row: a held-out query (first column), then its {k} nearest training images by cosine
similarity of pooled backbone features; green frame: same class as the query, red: another.</p>
{_img(out / "retrieval.png")}
<h2>Config</h2><pre>{html.escape(cfg)}</pre>
</body></html>
"""
