import math

import pytest
import torch
import torch.nn.functional as F

from moco.core.losses import info_nce, info_nce_logits


def reference_info_nce(q, k, queue, tau):
    """Eq. 1 of the paper, one query at a time, in float64."""
    losses = []
    for i in range(q.shape[0]):
        logits = [q[i] @ k[i]] + [q[i] @ queue[:, j] for j in range(queue.shape[1])]
        logits = torch.stack(logits).double() / tau
        losses.append(-(logits[0] - torch.logsumexp(logits, 0)))
    return torch.stack(losses).mean()


def _unit(*shape, dim):
    return F.normalize(torch.randn(*shape), dim=dim)


@pytest.mark.parametrize("tau", [0.07, 0.2, 1.0])
def test_matches_loop_reference(tau):
    q, k, queue = _unit(6, 16, dim=1), _unit(6, 16, dim=1), _unit(16, 37, dim=0)
    out = info_nce(q, k, queue, tau)
    assert out.loss.item() == pytest.approx(reference_info_nce(q, k, queue, tau).item(), rel=1e-5)


def test_matches_cross_entropy_over_concatenated_logits_with_gradients():
    q = _unit(8, 32, dim=1).requires_grad_()
    k, queue = _unit(8, 32, dim=1), _unit(32, 100, dim=0)
    loss = info_nce(q, k, queue, 0.2).loss
    (g,) = torch.autograd.grad(loss, q)
    logits = info_nce_logits(q, k, queue)
    assert logits.shape == (8, 101)
    assert torch.allclose(logits[:, 0], (q * k).sum(1))
    ref = F.cross_entropy(logits / 0.2, torch.zeros(8, dtype=torch.long))
    (g_ref,) = torch.autograd.grad(ref, q)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(g, g_ref, atol=1e-6)


@pytest.mark.parametrize("num_neg", [1, 15, 4096])
def test_identical_embeddings_give_log_k_plus_one(num_neg):
    v = _unit(1, 8, dim=1)
    q, k = v.repeat(4, 1), v.repeat(4, 1)
    queue = v.t().repeat(1, num_neg)
    out = info_nce(q, k, queue, 0.07)
    assert out.loss.item() == pytest.approx(math.log(num_neg + 1), rel=1e-5)
    assert out.correct.all()  # ties go to the positive, as argmax picks index 0


def test_correct_flags_pretext_top1():
    k = torch.eye(4)
    queue = torch.eye(4)[:, [1, 2]]  # negatives e1, e2
    q = torch.stack([torch.eye(4)[0], torch.eye(4)[2], torch.eye(4)[3], torch.eye(4)[1]])
    # row 0: pos 1 > neg 0 -> correct; row 1: q=e2, k=e1: pos 0 < neg(e2) 1 -> wrong
    # row 2: q=e3, k=e2: pos 0 = neg 0 -> tie -> correct
    # row 3: q=e1, k=e3: pos 0 < neg(e1) 1 -> wrong
    assert info_nce(q, k, queue, 0.1).correct.tolist() == [True, False, True, False]


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="negatives must be"):
        info_nce(_unit(2, 8, dim=1), _unit(2, 8, dim=1), _unit(4, 10, dim=0), 0.1)
    with pytest.raises(ValueError, match="q and k"):
        info_nce(_unit(2, 8, dim=1), _unit(3, 8, dim=1), _unit(8, 10, dim=0), 0.1)
