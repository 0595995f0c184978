import math

import pytest
import torch
import torch.nn.functional as F

from moco.core.losses import batch_contrastive, info_nce, info_nce_logits, nt_xent


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
    assert not out.correct.any()  # every logit ties: a tie is wrong (tests/core/test_ties.py)


def test_correct_flags_pretext_top1():
    k = torch.eye(4)
    queue = torch.eye(4)[:, [1, 2]]  # negatives e1, e2
    q = torch.stack([torch.eye(4)[0], torch.eye(4)[2], torch.eye(4)[3], torch.eye(4)[1]])
    # row 0: pos 1 > neg 0 -> correct; row 1: q=e2, k=e1: pos 0 < neg(e2) 1 -> wrong
    # row 2: q=e3, k=e2: pos 0 = neg 0 -> tie -> wrong (strict top-1)
    # row 3: q=e1, k=e3: pos 0 < neg(e1) 1 -> wrong
    assert info_nce(q, k, queue, 0.1).correct.tolist() == [True, False, False, False]


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="negatives must be"):
        info_nce(_unit(2, 8, dim=1), _unit(2, 8, dim=1), _unit(4, 10, dim=0), 0.1)
    with pytest.raises(ValueError, match="q and k"):
        info_nce(_unit(2, 8, dim=1), _unit(3, 8, dim=1), _unit(8, 10, dim=0), 0.1)


# ------------------------------------------------------ in-batch negatives (Fig. 2a, v3)


def reference_batch_contrastive(q, k_all, tau, offset):
    """-log softmax of query i's positive k_all[offset + i] among all keys, one at a time."""
    losses = []
    for i in range(q.shape[0]):
        logits = torch.stack([q[i] @ k_all[j] for j in range(k_all.shape[0])]).double() / tau
        losses.append(-(logits[offset + i] - torch.logsumexp(logits, 0)))
    return torch.stack(losses).mean()


def reference_nt_xent(z1, z2, tau, z1_all, z2_all, offset):
    """SimCLR Eq. 1, one anchor at a time: candidates are the 2M views but the anchor."""
    m = z1_all.shape[0]
    views = [z1_all[j] for j in range(m)] + [z2_all[j] for j in range(m)]
    losses = []
    for view, z in enumerate((z1, z2)):
        for i in range(z.shape[0]):
            own = view * m + offset + i
            twin = (1 - view) * m + offset + i
            cols = [j for j in range(2 * m) if j != own]
            logits = torch.stack([z[i] @ views[j] for j in cols]).double() / tau
            losses.append(-(logits[cols.index(twin)] - torch.logsumexp(logits, 0)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize(("n", "m", "offset"), [(6, 6, 0), (3, 9, 0), (3, 9, 3), (3, 9, 6)])
@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_batch_contrastive_matches_loop_reference(n, m, offset, tau):
    k_all = _unit(m, 16, dim=1).double()
    q = _unit(n, 16, dim=1).double()
    out = batch_contrastive(q, k_all, tau, offset)
    ref = reference_batch_contrastive(q, k_all, tau, offset)
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=0)
    assert out.correct.shape == (n,)
    logits = q @ k_all.t()
    assert torch.equal(out.correct, logits.argmax(1) == torch.arange(n) + offset)


def test_batch_contrastive_gradient_matches_reference():
    q = _unit(4, 8, dim=1).double().requires_grad_()
    k_all = _unit(12, 8, dim=1).double().requires_grad_()  # gathered keys: gradient too
    g = torch.autograd.grad(batch_contrastive(q, k_all, 0.3, 4).loss, (q, k_all))
    g_ref = torch.autograd.grad(reference_batch_contrastive(q, k_all, 0.3, 4), (q, k_all))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m", [2, 8, 256])
def test_batch_contrastive_identical_embeddings_give_log_m(m):
    v = _unit(1, 8, dim=1)
    out = batch_contrastive(v.repeat(m, 1), v.repeat(m, 1), 0.07)
    assert out.loss.item() == pytest.approx(math.log(m), rel=1e-5)
    assert not out.correct.any()  # every logit ties: a tie is wrong, as in info_nce


def test_batch_contrastive_orthonormal_keys_give_closed_form():
    # q_i = k_i = e_i: positive logit 1/tau, the M - 1 others 0
    tau, m = 0.5, 5
    e = torch.eye(m, dtype=torch.float64)
    out = batch_contrastive(e, e, tau)
    expected = -(1 / tau) + math.log(math.exp(1 / tau) + (m - 1))
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    assert out.correct.all()


def test_batch_contrastive_checks_shapes_and_offset():
    with pytest.raises(ValueError, match="offset"):
        batch_contrastive(_unit(3, 4, dim=1), _unit(6, 4, dim=1), 0.1, offset=4)
    with pytest.raises(ValueError, match="k_all"):
        batch_contrastive(_unit(3, 4, dim=1), _unit(6, 5, dim=1), 0.1)


# ------------------------------------------------------------------ SimCLR's NT-Xent


@pytest.mark.parametrize(("n", "m", "offset"), [(5, 5, 0), (3, 9, 0), (3, 9, 3), (3, 9, 6)])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_loop_reference(n, m, offset, tau):
    z1_all, z2_all = _unit(m, 16, dim=1).double(), _unit(m, 16, dim=1).double()
    z1, z2 = z1_all[offset : offset + n], z2_all[offset : offset + n]
    out = nt_xent(z1, z2, tau, z1_all, z2_all, offset) if m > n else nt_xent(z1, z2, tau)
    ref = reference_nt_xent(z1, z2, tau, z1_all, z2_all, offset)
    torch.testing.assert_close(out.loss, ref, rtol=1e-12, atol=0)
    assert out.correct.shape == (2 * n,)


def test_nt_xent_gradient_matches_reference_through_the_gathered_views():
    z1_all = _unit(8, 6, dim=1).double().requires_grad_()
    z2_all = _unit(8, 6, dim=1).double().requires_grad_()
    # the local views are rows of the gathered ones, as all_gather_grad gives them
    out = nt_xent(z1_all[2:6], z2_all[2:6], 0.2, z1_all, z2_all, offset=2)
    g = torch.autograd.grad(out.loss, (z1_all, z2_all))
    ref = reference_nt_xent(z1_all[2:6], z2_all[2:6], 0.2, z1_all, z2_all, 2)
    g_ref = torch.autograd.grad(ref, (z1_all, z2_all))
    for a, b in zip(g, g_ref, strict=True):
        assert torch.isfinite(a).all()  # the -inf mask gives no NaN in backward
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [1, 4, 64])
def test_nt_xent_identical_embeddings_give_log_2n_minus_1(n):
    v = _unit(1, 8, dim=1)
    out = nt_xent(v.repeat(n, 1), v.repeat(n, 1), 0.1)
    assert out.loss.item() == pytest.approx(math.log(2 * n - 1), abs=1e-5)
    assert out.correct.all() == (n == 1)  # n = 1: the twin is the only candidate


def test_nt_xent_orthogonal_pairs_give_closed_form():
    # z1_i = z2_i = e_i: the twin has logit 1/tau, the 2N - 2 others 0
    n, tau = 4, 0.5
    e = torch.eye(n, dtype=torch.float64)
    out = nt_xent(e, e, tau)
    expected = -(1 / tau) + math.log(math.exp(1 / tau) + 2 * n - 2)
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    assert out.correct.all()
    # twins orthogonal to each other and to all else: the twin is no better than a
    # negative, uniform over the 2N - 1 candidates
    e8 = torch.eye(2 * n, dtype=torch.float64)
    out = nt_xent(e8[:n], e8[n:], tau)
    assert out.loss.item() == pytest.approx(math.log(2 * n - 1), rel=1e-12)


def test_nt_xent_correct_flags_pretext_top1():
    e = torch.eye(3)
    z1 = torch.stack([e[0], e[1], e[2]])
    z2 = torch.stack([e[0], e[2], e[1]])  # the twins of images 1 and 2 are swapped
    # image 0: twin similarity 1 -> correct; z1[1] = e1 has twin z2[1] = e2 (0) but a
    # decoy z2[2] = e1 (1) -> wrong, and likewise for z1[2], z2[1], z2[2]
    assert nt_xent(z1, z2, 0.1).correct.tolist() == [True, False, False, True, False, False]
    z2 = torch.stack([e[0], e[2], e[0]])
    # z1[1] = e1 is orthogonal to every candidate: its twin ties them -> wrong
    assert not nt_xent(z1, z2, 0.1).correct[1].item()
