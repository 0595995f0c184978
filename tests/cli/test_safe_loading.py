"""A checkpoint is data: a crafted file whose unpickling would run a command is refused by
every command that opens a checkpoint, in one line naming the file, and nothing in it runs.

The payload creates a marker file when unpickled. A control test first shows that it
does exactly that under an unrestricted ``torch.load``, so the refusals below are not
vacuous; every refusal then checks that the marker was never created.
"""

from __future__ import annotations

import os
import pathlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from moco.cli import main
from moco.errors import ExportError
from moco.export.detectron2 import load_detectron2


class _Shell:
    """Unpickling this runs ``touch MARKER`` through ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


class _Touch:
    """Unpickling this calls ``pathlib.Path.touch(MARKER)``: no shell, a plain function."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


PAYLOADS = {"os.system": _Shell, "Path.touch": _Touch}
# what the refusal names: torch lists the globals a file needs (a method pickles as
# builtins.getattr of its class, so Path.touch shows as pathlib's classes and getattr)
GLOBALS = {"os.system": "posix.system", "Path.touch": "pathlib.Path"}


def _craft(path: Path, marker: Path, payload: str, legacy: bool = False) -> Path:
    """A file that looks like a checkpoint (state_dict, arch, epoch) with the payload
    inside; ``legacy``: torch's pre-1.6 format instead of its zip format."""
    obj = {
        "epoch": 200,
        "arch": "resnet50",
        "state_dict": {"module.encoder_q.conv1.weight": torch.zeros(1)},
        "optimizer": PAYLOADS[payload](marker),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_the_crafted_file_does_run_its_payload_when_unpickled_freely(tmp_path, payload, legacy):
    marker = tmp_path / "MARKER"
    path = _craft(tmp_path / "evil.pth.tar", marker, payload, legacy)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def _commands(target: Path, out: Path, tiny: list[str]) -> dict[str, list[str]]:
    """Every command that opens a checkpoint, given ``target`` (a file or a run dir)."""
    t = str(target)
    return {
        "knn": ["knn", t, "--data", "bundled"],
        "lincls": ["lincls", t, "--data", "bundled", "--protocol", "small"],
        "finetune": ["finetune", t, "--data", "bundled", "--epochs", "1"],
        "embed": ["embed", t, "--data", "bundled", "--out", str(out / "embed")],
        "export-torchvision": ["export", t, "--out", str(out / "tv.pth")],
        "export-timm": ["export", t, "--format", "timm", "--out", str(out / "timm.pth")],
        "export-detectron2": ["export", t, "--format", "detectron2", "--out", str(out / "d2.pkl")],
        "pretrain-resume": ["pretrain", "--resume", t],
        "pretrain-init": ["pretrain", "--init", t, "--out", str(out / "runs"), *tiny],
    }


TINY = [  # a run of a second, should the command ever get as far as training
    "model.width=0.125", "model.queue_size=128", "optim.batch_size=64", "optim.epochs=1",
    "eval.knn_every=0", "run.progress=false", "run.name=init",
]  # fmt: skip
COMMANDS = list(_commands(Path("x"), Path("y"), TINY))


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("placement", ["file", "run-dir"])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_every_command_refuses_the_crafted_checkpoint(
    tmp_path, monkeypatch, capsys, command, placement, payload
):
    monkeypatch.chdir(tmp_path)  # anything written relative to the cwd stays in tmp_path
    marker = tmp_path / "MARKER"
    if placement == "file":
        target = path = _craft(tmp_path / "downloaded" / "moco_v2.pth.tar", marker, payload)
    else:
        target = tmp_path / "run"
        path = _craft(target / "checkpoint.pth.tar", marker, payload)
    out = tmp_path / "out"
    assert main(_commands(target, out, TINY)[command]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"refused to load {str(path)!r}" in lines[0]
    assert "it needs " in lines[0] and GLOBALS[payload] in lines[0]
    assert "nothing in it was run" in lines[0]
    assert not marker.exists()
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_legacy_format_crafted_file_is_refused_too(tmp_path, capsys, payload):
    marker = tmp_path / "MARKER"
    path = _craft(tmp_path / "old.pth.tar", marker, payload, legacy=True)
    assert main(["knn", str(path), "--data", "bundled"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"refused to load {str(path)!r}" in err
    assert not marker.exists()


def test_a_crafted_detectron2_pickle_is_refused_unrun(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "d2.pkl"
    for payload, name in GLOBALS.items():
        with open(path, "wb") as f:
            pickle.dump({"model": {"stem.conv1.weight": PAYLOADS[payload](marker)}}, f)
        with pytest.raises(ExportError, match=f"refused to load .*it needs {name}") as err:
            load_detectron2(path)
        assert "\n" not in str(err.value) and not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_detectron2_pickle_of_arrays_still_loads(tmp_path, protocol):
    """What the official converter writes (numpy arrays by name, any protocol), read back."""
    model = {"stem.conv1.weight": np.ones((4, 3, 7, 7), np.float32), "res2.0.x": np.arange(3)}
    path = tmp_path / "d2.pkl"
    with open(path, "wb") as f:
        obj = {"model": model, "__author__": "MOCO", "matching_heuristics": True}
        pickle.dump(obj, f, protocol=protocol)
    loaded = load_detectron2(path)
    assert loaded.keys() == model.keys()
    assert all(
        np.array_equal(loaded[k], v) and loaded[k].dtype == v.dtype for k, v in model.items()
    )
