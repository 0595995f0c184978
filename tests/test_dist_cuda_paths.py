"""What a multi-GPU launch does before its first step, checked without a GPU: the process
group NCCL gets (backend, device, timeout, error handling), and the refusal to decode
into memory a file source that the ranks of one node could not hold (stream instead)."""

from __future__ import annotations

import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from moco import dist
from moco.data import interface
from moco.data.listing import Listing
from moco.errors import ConfigError


@pytest.fixture
def fake_group(monkeypatch):
    """Launched as rank 1 of 2 (torchrun's variables); init_process_group and set_device
    record their arguments instead of connecting to anything."""
    for var in ("TORCHELASTIC_USE_AGENT_STORE", "TORCH_NCCL_ASYNC_ERROR_HANDLING"):
        monkeypatch.setenv(var, "")  # so that the value init_from_env sets is undone too
        monkeypatch.delenv(var)
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    calls: dict[str, list] = {"init": [], "set_device": []}
    monkeypatch.setattr(
        dist.torch_dist, "init_process_group", lambda *a, **k: calls["init"].append((a, k))
    )
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls["set_device"].append(d))
    return calls


def test_nccl_group_on_this_ranks_gpu_with_the_run_timeout_and_teardown(fake_group):
    import os

    device = torch.device("cuda", 1)
    assert dist.init_from_env(device, timeout_s=42.0)
    (args, kwargs), = fake_group["init"]  # fmt: skip
    assert args == ("nccl",)
    assert kwargs["timeout"] == datetime.timedelta(seconds=42)  # the watchdog's limit too
    assert kwargs["device_id"] == device  # the communicator is made on this rank's GPU
    assert fake_group["set_device"] == [device]
    # a timed-out or failed collective aborts the process instead of hanging forever
    assert os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


def test_a_users_nccl_error_handling_is_kept(fake_group, monkeypatch):
    import os

    monkeypatch.setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")
    dist.init_from_env(torch.device("cuda", 0), timeout_s=5)
    assert os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3"


def test_gloo_on_cpu_touches_no_gpu(fake_group):
    assert dist.init_from_env(torch.device("cpu"), timeout_s=7)
    (args, kwargs), = fake_group["init"]  # fmt: skip
    assert args == ("gloo",) and kwargs["device_id"] is None
    assert kwargs["timeout"] == datetime.timedelta(seconds=7)
    assert fake_group["set_device"] == []


def test_local_world_size_is_the_launchers_or_none(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert dist.local_world_size() == 8
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert dist.local_world_size() is None


# ------------------------------------------- image files that do not fit: stream them


def test_the_in_memory_estimate_is_files_x_channels_x_side_squared():
    assert interface.in_memory_bytes(1_281_167, 224) == 1_281_167 * 3 * 224 * 224
    assert interface.in_memory_bytes(10, 32, channels=1) == 10 * 32 * 32
    # ImageNet at 224 px: about 193 GB per process, as the issue says
    assert round(interface.in_memory_bytes(1_281_167, 224) / 1e9) == 193


def test_imagenet_on_an_8_gpu_node_is_refused_with_the_arithmetic():
    with pytest.raises(ConfigError) as err:
        interface.check_fits_in_memory("folder:/data/imagenet", 1_281_167, 224, 8, 1024 * 10**9)
    msg = str(err.value)
    assert "decoding its 1,281,167 image files into memory at data.load_size=224" in msg
    assert "holds 192.9 GB per process (1,281,167 x 3 x 224^2 bytes)" in msg
    assert "578.6 GB x 8 processes on this node = 4,628.4 GB" in msg  # 3 copies while decoding
    assert "over 75% of this machine's 1,024.0 GB of memory" in msg
    assert "data.stream=true" in msg


def test_the_budget_is_three_quarters_of_memory_for_the_decoding_peak_of_every_process():
    held = interface.in_memory_bytes(1000, 100)  # 30 MB per process
    fits = 2 * interface.LOAD_COPIES * held / interface.MEMORY_BUDGET  # exactly at the budget
    interface.check_fits_in_memory("folder:x", 1000, 100, 2, int(fits))
    with pytest.raises(ConfigError, match="x 2 processes on this node"):
        interface.check_fits_in_memory("folder:x", 1000, 100, 2, int(fits) - 1)
    interface.check_fits_in_memory("folder:x", 10**9, 224, 1, memory=0)  # OS did not say


@pytest.fixture
def fake_listing(monkeypatch):
    """open_data on a fake folder of ``n`` files (train + val), 10 GB of memory, and a
    loader that records that it was asked instead of decoding."""
    loaded: list[tuple] = []

    def setup(n_train: int, n_val: int, per_node: int | None) -> list[tuple]:
        loaded.clear()
        files = [(Path(f"/fake/{i}.jpg"), i % 10) for i in range(n_train + n_val)]
        listing = Listing(files[:n_train], files[n_train:] or None, None, "val/ folder")
        monkeypatch.setattr(interface, "list_files", lambda kind, path: listing)
        monkeypatch.setattr(interface, "physical_memory", lambda: 10 * 10**9)
        fake = SimpleNamespace(name="fake", held_out="val/ folder", classes=None)
        monkeypatch.setattr(interface, "load_source", lambda *a: loaded.append(a) or fake)
        if per_node is None:
            monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", str(per_node))
        return loaded

    return setup


def test_open_data_counts_every_split_and_every_process_of_the_node(fake_listing):
    # 10,000 files at 224 px: 1.5 GB held, 4.5 GB while decoding; budget 7.5 GB
    loaded = fake_listing(9_000, 1_000, None)
    interface.open_data("folder:/fake", 0.1, 0, 224, stream=False)
    assert len(loaded) == 1  # one process fits: decoded
    loaded = fake_listing(9_000, 1_000, 2)
    with pytest.raises(ConfigError, match=r"10,000 image files.* x 2 processes .* = 9.0 GB"):
        interface.open_data("folder:/fake", 0.1, 0, 224, stream=False)
    assert loaded == []  # refused before anything was decoded
    interface.open_data("folder:/fake", 0.1, 0, 112, stream=False)  # a smaller load_size fits
    assert len(loaded) == 1


def test_streamed_and_non_file_sources_are_not_estimated(fake_listing, monkeypatch, tiny_idx):
    loaded = fake_listing(10_000, 0, 8)  # 36 GB to decode: would be refused
    monkeypatch.setattr(interface, "list_source", lambda *a: "listing")
    monkeypatch.setattr(interface, "StreamedData", lambda files: ("streamed", files))
    assert interface.open_data("folder:/fake", 0.1, 0, 224, True) == ("streamed", "listing")
    interface.open_data(str(tiny_idx), 0.1, 0, None, stream=False)  # IDX: no listing asked
    interface.open_data("bundled", 0.1, 0, None, stream=False)
    assert len(loaded) == 2
