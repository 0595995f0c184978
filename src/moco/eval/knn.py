"""Weighted kNN classification on cosine similarity (Wu et al. 2018; the official MoCo
CIFAR demo's monitor: k = 200, t = 0.1, training features as the memory)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    query: torch.Tensor,
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    t: float = 0.1,
    max_chunk_bytes: int = 256 * 2**20,
) -> torch.Tensor:
    """Predicted classes (M,) of ``query`` (M, D) from ``memory`` (N, D), labels (N,).

    Each of the k most cosine-similar memory items votes for its class with weight
    exp(sim / t); the class with the largest total wins. Queries are processed in chunks
    sized so that the (chunk, N) similarity block stays under ``max_chunk_bytes``, so
    the memory footprint does not grow with the number of queries.
    """
    if query.shape[1] != memory.shape[1]:
        raise ValueError(f"query dim {query.shape[1]} != memory dim {memory.shape[1]}")
    k = min(k, memory.shape[0])
    memory = F.normalize(memory.float(), dim=1)
    query = F.normalize(query.float(), dim=1)
    chunk = max(1, max_chunk_bytes // (4 * memory.shape[0]))
    preds = []
    for i in range(0, query.shape[0], chunk):
        sim = query[i : i + chunk] @ memory.t()  # (c, N)
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / t).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, memory_labels[top_idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_top1(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    t: float = 0.1,
) -> float:
    """Top-1 accuracy in [0, 1] of the weighted kNN classifier on the test features."""
    num_classes = int(max(train_labels.max().item(), test_labels.max().item())) + 1
    pred = knn_predict(
        test_features, train_features, train_labels.to(train_features.device), num_classes, k, t
    )
    return (pred.cpu() == test_labels.cpu()).float().mean().item()
