"""One rank of the sharded-kNN-monitor test (tests/eval/test_monitor.py).

``python monitor_worker.py OUT_DIR DATA_DIR`` with RANK / WORLD_SIZE / MASTER_* in the
environment: the features and the kNN top-1 of both paths of ``folder:DATA_DIR``, saved
to ``OUT_DIR/rank<r>.pt`` for the test to compare with one process.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch


def measure(data_dir: Path) -> dict[str, object]:
    from moco.data.decode import UnreadableImageWarning
    from moco.data.interface import open_data
    from moco.encoders.base import as_encoder
    from moco.encoders.resnet import build_encoder
    from moco.eval.monitor import knn_monitor, split_features

    torch.manual_seed(0)
    enc = build_encoder("resnet18", 8, cifar_stem=True, in_chans=3, width=0.125)
    out: dict[str, object] = {}
    cpu = torch.device("cpu")
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks run (rank_env), whatever the test process has
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        for stream in (False, True):
            data = open_data(f"folder:{data_dir}", 0.3, 0, 16, stream)
            transform = data.eval_transform(16, mean, std)
            enc.eval()
            feats = [
                split_features(as_encoder(enc).forward_features, s, transform, cpu, 0)
                for s in data.eval_splits(16)
            ]
            top1 = knn_monitor(enc, data, 16, mean, std, 5, 0.1, "backbone", cpu, 0)
            out["streamed" if stream else "in_memory"] = {"features": feats, "top1": top1}
    torch.set_num_threads(threads)
    return out


def main() -> None:
    from moco import dist

    out_dir, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
    dist.init_from_env(torch.device("cpu"))
    try:
        result = measure(data_dir)
        torch.save(result, out_dir / f"rank{dist.rank()}.pt")
    finally:
        dist.shutdown()


if __name__ == "__main__":
    main()
