import pytest
import torch

from moco.core.moco import MoCo
from moco.core.queue import enqueue_, init_queue
from moco.encoders.resnet import build_encoder


def test_init_queue_is_unit_columns():
    q = init_queue(16, 50)
    assert q.shape == (16, 50)
    assert torch.allclose(q.norm(dim=0), torch.ones(50), atol=1e-6)


def test_fifo_order_and_wrap_around_without_dropping_keys():
    size, dim = 10, 3
    queue, ptr = torch.zeros(dim, size), torch.zeros(1, dtype=torch.long)
    batches = [
        torch.full((4, dim), float(b + 1)) + torch.arange(4)[:, None] * 0.1 for b in range(3)
    ]
    enqueue_(queue, ptr, batches[0])
    assert ptr.item() == 4 and torch.equal(queue[:, :4], batches[0].t())
    enqueue_(queue, ptr, batches[1])
    assert ptr.item() == 8 and torch.equal(queue[:, 4:8], batches[1].t())
    enqueue_(queue, ptr, batches[2])  # 10 is not a multiple of 4: wraps to columns 8, 9, 0, 1
    assert ptr.item() == 2
    assert torch.equal(queue[:, 8:10], batches[2][:2].t())
    assert torch.equal(queue[:, 0:2], batches[2][2:].t())
    # the two oldest survivors (batch 0's last keys) sit at ptr, then batch 1, then batch 2
    order = torch.cat([queue[:, 2:], queue[:, :2]], dim=1)
    expected = torch.cat([batches[0][2:], batches[1], batches[2]]).t()
    assert torch.equal(order, expected)


def test_rejects_batch_larger_than_queue_and_wrong_width():
    queue, ptr = torch.zeros(3, 4), torch.zeros(1, dtype=torch.long)
    with pytest.raises(ValueError, match="K=4"):
        enqueue_(queue, ptr, torch.zeros(5, 3))
    with pytest.raises(ValueError, match="channels"):
        enqueue_(queue, ptr, torch.zeros(2, 7))


def test_queue_and_pointer_round_trip_through_state_dict():
    def model():
        return MoCo(build_encoder("resnet18", 8, cifar_stem=True, in_chans=1, width=0.125), 8, 12)

    a = model()
    a.enqueue(torch.nn.functional.normalize(torch.randn(5, 8), dim=1))
    sd = a.state_dict()
    assert sd["queue"].shape == (8, 12) and sd["queue_ptr"].item() == 5
    b = model()
    b.load_state_dict(sd, strict=True)
    assert torch.equal(b.queue, a.queue) and b.queue_ptr.item() == 5
