"""Which GPU each process takes (moco.device.resolve_device) and native bf16, on any
machine: CUDA is mocked (device count, availability, capability, set_device). The tests
marked ``cuda`` at the end run only where a GPU is present (the GPU check runs them)."""

from __future__ import annotations

import pytest
import torch

from moco.device import fast_bf16, resolve_amp, resolve_device
from moco.errors import ConfigError

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "CUDA_VISIBLE_DEVICES")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(n, local_rank=None, per_node=None, visible_env=None)``: this process sees
    ``n`` GPUs (mocked), under a torchrun-like launcher when ``local_rank`` is given
    (``per_node``: LOCAL_WORLD_SIZE, None = unset). Returns the devices set_device got."""
    chosen: list[torch.device] = []

    def setup(
        n: int,
        local_rank: int | None = None,
        per_node: int | None = None,
        visible_env: str | None = None,
    ) -> list[torch.device]:
        for var in LAUNCHER_VARS:
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(torch.device(d)))
        if local_rank is not None:
            world = per_node or local_rank + 1
            env = {"RANK": local_rank, "WORLD_SIZE": world, "LOCAL_RANK": local_rank}
            for k, v in env.items():
                monkeypatch.setenv(k, str(v))
            if per_node is not None:
                monkeypatch.setenv("LOCAL_WORLD_SIZE", str(per_node))
        if visible_env is not None:
            monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible_env)
        return chosen

    return setup


def test_one_process_takes_gpu_0_or_the_one_named_and_makes_it_current(gpus):
    chosen = gpus(2)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", i) for i in (0, 0, 1)]
    assert resolve_device("cpu") == torch.device("cpu") and len(chosen) == 3
    with pytest.raises(ConfigError, match=r"run.device=cuda:2 but this process sees 2 visible"):
        resolve_device("cuda:2")


def test_torchrun_gives_each_local_rank_its_own_gpu(gpus):
    chosen = gpus(8, local_rank=5, per_node=8)
    assert resolve_device("auto") == torch.device("cuda", 5)
    assert resolve_device("cuda") == torch.device("cuda", 5)
    assert chosen == [torch.device("cuda", 5)] * 2  # current device: nothing lands on GPU 0
    gpus(8, local_rank=1, per_node=2)  # fewer processes than GPUs: fine
    assert resolve_device("cuda") == torch.device("cuda", 1)


@pytest.mark.parametrize("local_rank", [0, 1])
def test_more_processes_than_gpus_stops_every_rank_with_the_counts(gpus, local_rank):
    """Rank 1 used to die with "invalid device ordinal" and rank 0 to hang; now both
    stop at once with the same explanation."""
    chosen = gpus(1, local_rank=local_rank, per_node=2)
    with pytest.raises(ConfigError) as err:
        resolve_device("auto")
    msg = str(err.value)
    assert "torchrun starts 2 processes on this node and each needs a GPU of its own" in msg
    assert f"rank {local_rank} of 2 on this node" in msg and "sees 1 visible GPU" in msg
    assert "--nproc_per_node 1" in msg and "run.device=cpu" in msg
    assert chosen == []
    gpus(2, local_rank=local_rank, per_node=3, visible_env="0,1")
    with pytest.raises(ConfigError, match=r"sees 2 visible GPUs \(CUDA_VISIBLE_DEVICES=0,1\)"):
        resolve_device("cuda")


def test_one_gpu_bound_per_process_by_the_scheduler_is_cuda_0(gpus):
    """srun with one GPU per task and the rank variables set by hand (no torchrun, so no
    LOCAL_WORLD_SIZE): each process sees only its own GPU, as cuda:0."""
    chosen = gpus(1, local_rank=3, visible_env="3")
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert chosen == [torch.device("cuda", 0)]
    gpus(4, local_rank=3)  # launched by hand on a node whose 4 GPUs all are visible
    assert resolve_device("cuda") == torch.device("cuda", 3)
    gpus(1, local_rank=1)  # no binding: one GPU for two processes of this node
    with pytest.raises(ConfigError, match=r"rank 1 on this node \(LOCAL_RANK\) needs a GPU"):
        resolve_device("cuda")


def test_an_explicit_gpu_under_torchrun_with_several_local_ranks_is_refused(gpus):
    gpus(8, local_rank=0, per_node=8)
    with pytest.raises(ConfigError, match="cuda:0 would put all 8 processes of this node on one"):
        resolve_device("cuda:0")
    gpus(8, local_rank=0, per_node=1)  # one process per node: its own choice
    assert resolve_device("cuda:6") == torch.device("cuda", 6)


def test_cpu_under_torchrun_is_cpu_whatever_gpus_there_are(gpus):
    chosen = gpus(1, local_rank=1, per_node=2)
    assert resolve_device("cpu") == torch.device("cpu") and chosen == []
    gpus(0, local_rank=1, per_node=2)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")


@pytest.mark.parametrize(
    ("capability", "native"),
    [((6, 1), False), ((7, 0), False), ((7, 5), False), ((8, 0), True), ((8, 9), True),
     ((9, 0), True)],
)  # fmt: skip
def test_amp_auto_takes_bf16_only_where_the_gpu_computes_it_natively(
    monkeypatch, capability, native
):
    """V100 (7.0) and T4 (7.5) emulate bf16, and is_bf16_supported() says yes there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda", 0)
    assert fast_bf16(cuda) is native
    assert resolve_amp("auto", cuda) == ("bf16" if native else "none")
    assert resolve_amp("bf16", cuda) == "bf16"  # asked for explicitly: kept
    assert resolve_amp("fp16", cuda) == "fp16"


# ------------------------------------------------------------------ on a real GPU only


@needs_cuda
def test_on_this_gpu_auto_is_the_current_cuda_device_and_amp_follows_capability():
    device = resolve_device("auto")
    assert device == torch.device("cuda", 0) and torch.cuda.current_device() == 0
    native = torch.cuda.get_device_capability(device) >= (8, 0)
    assert resolve_amp("auto", device) == ("bf16" if native else "none")


@needs_cuda
@pytest.mark.slow
@pytest.mark.parametrize("amp", ["fp16", "auto", "none"])
def test_a_tiny_run_trains_on_cuda(tiny_config, amp):
    """One epoch on the GPU with each precision: the weights and the queue live on the
    GPU during training, the checkpoint loads on CPU, the loss is finite."""
    from moco import pretrain
    from moco.engine import checkpoint as ckpt_io

    result = pretrain(tiny_config("run.device=cuda", f"optim.amp={amp}", "run.name=gpu"))
    ck = ckpt_io.load(result.checkpoint)
    assert ck["epoch"] == 1 and ck["derived"]["device"] == "cuda:0"
    native = torch.cuda.get_device_capability(0) >= (8, 0)
    expected = {"fp16": "fp16", "none": "none", "auto": "bf16" if native else "none"}[amp]
    assert ck["derived"]["amp"] == expected
    assert all(torch.isfinite(t).all() for t in ck["state_dict"].values() if t.is_floating_point())
    assert result.knn_top1 is not None and result.knn_top1 > 0
