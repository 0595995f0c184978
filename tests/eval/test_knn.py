import pytest
import torch
import torch.nn.functional as F

from moco.eval.knn import knn_predict, knn_top1


def reference_knn(query, memory, labels, num_classes, k, t):
    """One query at a time: k most cosine-similar memory items vote exp(sim / t)."""
    memory = F.normalize(memory, dim=1)
    preds = []
    for q in F.normalize(query, dim=1):
        sim = memory @ q
        top = torch.argsort(sim, descending=True)[:k]
        votes = torch.zeros(num_classes)
        for i in top:
            votes[labels[i]] += torch.exp(sim[i] / t)
        preds.append(int(votes.argmax()))
    return torch.tensor(preds)


@pytest.mark.parametrize(("k", "t"), [(1, 0.1), (5, 0.07), (50, 1.0)])
def test_matches_loop_reference(k, t):
    memory, query = torch.randn(120, 8), torch.randn(30, 8)
    labels = torch.randint(0, 4, (120,))
    assert torch.equal(knn_predict(query, memory, labels, 4, k, t),
                       reference_knn(query, memory, labels, 4, k, t))  # fmt: skip


def test_chunking_by_memory_does_not_change_predictions():
    memory, query = torch.randn(500, 16), torch.randn(333, 16)
    labels = torch.randint(0, 7, (500,))
    whole = knn_predict(query, memory, labels, 7, k=20, t=0.1)
    tiny = knn_predict(query, memory, labels, 7, k=20, t=0.1, max_chunk_bytes=4 * 500 * 3)
    assert torch.equal(whole, tiny)


def test_separated_clusters_are_classified_perfectly():
    centres = torch.eye(3) * 10
    labels = torch.arange(3).repeat_interleave(20)
    memory = centres[labels] + torch.randn(60, 3) * 0.1
    query = centres[torch.arange(3)] + torch.randn(3, 3) * 0.1
    assert knn_top1(memory, labels, query, torch.arange(3), k=10, t=0.1) == 1.0
