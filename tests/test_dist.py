"""moco.dist: the identity in one process; on 2 gloo processes, the same as one process."""

from __future__ import annotations

import pytest
import torch

from moco import dist
from moco.data.loader import InMemoryLoader

from .conftest import launch_ranks
from .dist_worker import B, ToFloat, batches, objective, tiny_moco, train


def test_one_process_helpers_are_the_identity():
    x = torch.randn(5, 3)
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_main()
    assert dist.all_gather_nograd(x) is x and dist.all_gather_grad(x) is x
    assert dist.broadcast_(x) is x and dist.all_reduce_sum_(x) is x
    assert torch.equal(dist.shard_indices(5), torch.arange(5))
    assert dist.on_main(lambda: 7) == 7 and dist.broadcast_object("a") == "a"
    assert dist.all_gather_object(3) == [3]
    module = torch.nn.Linear(2, 2)
    assert dist.data_parallel(module, torch.device("cpu")) is module
    bn = torch.nn.BatchNorm2d(3)
    assert dist.sync_batchnorm(bn) is bn  # one process: BN already sees the whole batch
    bn(torch.randn(4, 3, 2, 2))  # running statistics away from their initial 0 and 1
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    assert not torch.equal(before["running_mean"], torch.zeros(3))
    dist.average_bn_stats_(bn)  # nothing to average with: every statistic as it was
    assert all(torch.equal(v, before[k]) for k, v in bn.state_dict().items())
    # (on 2 processes, test_two_processes_equal_one_process_with_two_bn_groups checks
    # that the averaged statistics are those of the one-process run)
    assert not dist.launched() and dist.restart_count() == 0


def test_loader_shards_each_global_batch_once_across_ranks():
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1)
    labels = torch.zeros(50, dtype=torch.long)
    one = list(InMemoryLoader(images, labels, 12, seed=3, num_replicas=1, rank=0))
    ranks = [
        list(InMemoryLoader(images, labels, 12, seed=3, num_replicas=3, rank=r)) for r in range(3)
    ]
    assert len(one) == len(ranks[0]) == 4  # drop_last on the global batch: 50 // 12
    for step, (_, _, idx) in enumerate(one):
        assert torch.equal(torch.cat([ranks[r][step][2] for r in range(3)]), idx)
    seen = torch.cat([b[2] for r in ranks for b in r])
    assert len(seen.unique()) == len(seen) == 48  # each image at most once per epoch
    with pytest.raises(ValueError, match="not divisible by 5 processes"):
        InMemoryLoader(images, labels, 12, num_replicas=5, rank=0)


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_bn_groups(tmp_path):
    """2 ranks x B/2 with cross-process shuffle BN == 1 process, B, 2 split-BN groups,
    under the same key permutations: losses, gradients, weights, queue, BN statistics."""
    launch_ranks("equivalence", tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    x_q, x_k = batches()
    ref = train(tiny_moco(bn_splits=2), x_q, x_k)

    tol = {"rtol": 1e-9, "atol": 1e-12}  # float64
    torch.testing.assert_close(ranks[0]["losses"], ref["losses"], **tol)
    for name, g in ref["grads"].items():  # DDP-averaged gradients of the last step
        for r in range(2):
            torch.testing.assert_close(ranks[r]["grads"][name], g, **tol)
    for name, v in ref["state"].items():  # encoder_q, encoder_k, BN stats, queue, ptr
        for r in range(2):
            torch.testing.assert_close(ranks[r]["state"][name], v, **tol)
    # the queue is the same tensor on every rank: gathered keys, never broadcast
    assert torch.equal(ranks[0]["state"]["queue"], ranks[1]["state"]["queue"])
    assert int(ref["state"]["queue_ptr"]) == (3 * B) % 40  # wrapped around


@pytest.mark.slow
def test_gather_with_gradient_gives_the_gradient_of_the_summed_losses(tmp_path):
    launch_ranks("gather", tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    xs = [ranks[r]["x"].clone().requires_grad_() for r in range(2)]
    y = torch.cat(xs)
    sum(objective(y, r) for r in range(2)).backward()
    for r in range(2):
        assert torch.equal(ranks[r]["y"], y.detach())
        assert torch.equal(ranks[r]["nograd"], y.detach())
        torch.testing.assert_close(ranks[r]["grad"], xs[r].grad)


@pytest.mark.slow
def test_features_are_gathered_by_index_without_padding_duplicates(tmp_path):
    from moco.eval.features import extract_features

    launch_ranks("features", tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    model = tiny_moco(bn_splits=1).encoder_q.eval()
    images = ranks[0]["images"]
    assert torch.equal(images, ranks[1]["images"])
    ref = extract_features(model.forward_features, images, ToFloat(), batch_size=8)
    assert ranks[0]["shard"].tolist() == list(range(19))
    assert ranks[1]["shard"].tolist() == [*range(19, 37), 36]  # padded with the last index
    for r in range(2):  # 37 rows in index order: the padded row is dropped
        torch.testing.assert_close(ranks[r]["features"], ref, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_an_error_on_rank_0_is_raised_on_every_rank(tmp_path):
    launch_ranks("on_main_error", tmp_path)
    for r in range(2):
        assert (tmp_path / f"rank{r}.txt").read_text() == "only rank 0 ran this"
