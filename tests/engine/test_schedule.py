import math

import pytest

from moco.engine.schedule import lr_at


def test_step_schedule_milestones():
    kw = dict(
        base_lr=0.03, total_steps=2000, steps_per_epoch=10, schedule="step", milestones=[120, 160]
    )
    assert lr_at(0, **kw) == 0.03
    assert lr_at(1199, **kw) == 0.03
    assert lr_at(1200, **kw) == pytest.approx(0.003)
    assert lr_at(1600, **kw) == pytest.approx(0.0003)


def test_cosine_schedule():
    kw = dict(base_lr=0.1, total_steps=100, steps_per_epoch=10, schedule="cosine")
    assert lr_at(0, **kw) == 0.1
    assert lr_at(50, **kw) == pytest.approx(0.05)
    assert lr_at(100, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(25, **kw) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))


def test_warmup_is_linear_then_schedule():
    kw = dict(base_lr=1.0, total_steps=1000, steps_per_epoch=10, schedule="step", warmup_steps=10)
    assert [lr_at(s, **kw) for s in (0, 4, 9, 10)] == pytest.approx([0.1, 0.5, 1.0, 1.0])


def test_unknown_schedule():
    with pytest.raises(ValueError, match="cosine"):
        lr_at(0, 1.0, 10, 1, "linear")


def test_momentum_schedules():
    from moco.engine.schedule import momentum_at

    assert momentum_at(0, 0.99, 100, "constant") == 0.99
    assert momentum_at(100, 0.99, 100, "constant") == 0.99
    assert momentum_at(0, 0.99, 100, "cosine") == pytest.approx(0.99)
    assert momentum_at(50, 0.99, 100, "cosine") == pytest.approx(0.995)  # half way
    assert momentum_at(100, 0.99, 100, "cosine") == pytest.approx(1.0)
    ms = [momentum_at(t, 0.99, 100, "cosine") for t in range(101)]
    assert all(a <= b for a, b in zip(ms, ms[1:], strict=False))  # non-decreasing
    with pytest.raises(ValueError, match="constant or cosine"):
        momentum_at(0, 0.99, 100, "linear")
