"""run.init: a new run's encoders (and, when asked, its queue) from a checkpoint, ours or
official, loaded strictly; anything that does not fit is refused, naming key and shapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from moco.config import load_config, to_yaml
from moco.core.method import ContrastiveMethod
from moco.engine import checkpoint as ckpt_io
from moco.engine.build import build_model
from moco.engine.init import init_from_checkpoint
from moco.errors import CheckpointError

SMALL = ("model.width=0.125", "model.queue_size=128", "augment.size=28")


def _model(*overrides: str, in_chans: int = 1) -> ContrastiveMethod:
    return build_model(load_config("default", [*SMALL, *overrides]), in_chans)


def _scramble(model: ContrastiveMethod) -> ContrastiveMethod:
    """Weights that differ from any fresh model's (and encoder_k from encoder_q), a queue
    of its own and a moved pointer: nothing can pass for a copy by accident."""
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.copy_(torch.randn_like(p))
        if hasattr(model, "queue_ptr"):
            model.queue_ptr.fill_(64)
    return model


def _ours(path: Path, model: ContrastiveMethod, *overrides: str) -> Path:
    cfg = load_config("default", [*SMALL, *overrides])
    torch.save(
        {
            "epoch": 7,
            "arch": cfg.model.arch.value,
            "state_dict": ckpt_io.to_official(model.state_dict()),
            "config": to_yaml(cfg),
        },
        path,
    )
    return path


def _official(path: Path, model: ContrastiveMethod, arch: str = "resnet18") -> Path:
    """What main_moco.py saves: epoch, arch, the DDP-prefixed state_dict, optimizer."""
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9)
    torch.save(
        {
            "epoch": 200,
            "arch": arch,
            "state_dict": ckpt_io.to_official(model.state_dict()),
            "optimizer": opt.state_dict(),
        },
        path,
    )
    return path


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_our_checkpoint_gives_both_encoders_and_leaves_the_queue(tmp_path):
    source = _scramble(_model())
    path = _ours(tmp_path / "checkpoint.pth.tar", source)
    model = _model()
    queue_before = model.queue.clone()
    line = init_from_checkpoint(model, tmp_path)  # a run directory works too
    assert _equal(model.encoder_q, source.encoder_q)
    assert _equal(model.encoder_k, source.encoder_k)
    assert not _equal(model.encoder_q, model.encoder_k)  # encoder_k is the file's own
    assert torch.equal(model.queue, queue_before) and int(model.queue_ptr) == 0
    assert str(path) in line and "moco checkpoint" in line and "epoch 7" in line
    assert "queue" not in line


def test_official_layout_gives_both_encoders_and_the_queue_when_asked(tmp_path):
    source = _scramble(_model())
    path = _official(tmp_path / "moco_v2_200ep_pretrain.pth.tar", source)
    model = _model()
    line = init_from_checkpoint(model, path, queue=True)
    assert _equal(model.encoder_q, source.encoder_q)
    assert _equal(model.encoder_k, source.encoder_k)
    assert torch.equal(model.queue, source.queue) and int(model.queue_ptr) == 64
    assert "official main_moco.py" in line and "epoch 200" in line
    assert "resnet18 (conv1 8x1x3x3)" in line and "queue (128x128)" in line


def test_without_encoder_k_the_key_encoder_copies_the_loaded_query_encoder(tmp_path):
    source = _scramble(_model())
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("encoder_k.")}
    path = tmp_path / "q_only.pth.tar"
    torch.save({"arch": "resnet18", "state_dict": ckpt_io.to_official(state)}, path)
    model = _model()
    line = init_from_checkpoint(model, path)
    assert _equal(model.encoder_q, source.encoder_q)
    assert _equal(model.encoder_k, source.encoder_q)
    assert "encoder_k (copied from encoder_q)" in line


def test_a_method_without_key_encoder_takes_encoder_q_only(tmp_path):
    source = _scramble(_model())
    path = _official(tmp_path / "official.pth.tar", source)
    model = _model("model.method=simclr")
    init_from_checkpoint(model, path)
    assert _equal(model.encoder_q, source.encoder_q)
    with pytest.raises(CheckpointError, match="model.method=simclr has no queue"):
        init_from_checkpoint(model, path, queue=True)


def test_another_architecture_is_refused_naming_key_and_shapes(tmp_path):
    path = _official(tmp_path / "r50.pth.tar", _model("model.arch=resnet50"), "resnet50")
    model = _model()  # resnet18
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        init_from_checkpoint(model, path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    assert "the checkpoint's encoder_q is resnet50 (conv1 8x1x3x3)" in msg
    assert "the model's is resnet18 (conv1 8x1x3x3)" in msg
    assert "layer1.0.conv1.weight is 8x8x1x1 in the checkpoint and 8x8x3x3 in the model" in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched


@pytest.mark.parametrize(
    ("overrides", "in_chans", "expected"),
    [
        (("model.mlp=false",), 1, "keys missing from the checkpoint (e.g. fc.weight)"),
        (("model.dim=64",), 1, "fc.2.weight is 128x64 in the checkpoint and 64x64"),
        ((), 3, "conv1.weight is 8x1x3x3 in the checkpoint and 8x3x3x3 in the model"),
        (("model.cifar_stem=false",), 1, "conv1.weight is 8x1x3x3 in the checkpoint and 8x1x7x7"),
    ],
)
def test_another_head_stem_or_channel_count_is_refused(tmp_path, overrides, in_chans, expected):
    path = _official(tmp_path / "official.pth.tar", _model())
    with pytest.raises(CheckpointError, match="cannot initialise from") as err:
        init_from_checkpoint(_model(*overrides, in_chans=in_chans), path)
    assert expected in str(err.value)


def test_a_queue_of_another_shape_is_refused_only_when_asked(tmp_path):
    source = _scramble(_model())
    path = _official(tmp_path / "official.pth.tar", source)
    model = _model("model.queue_size=256")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        CheckpointError, match=r"it is 128x128 \(dim x K\) and the model's is 128x256"
    ):
        init_from_checkpoint(model, path, queue=True)
    # checked before anything was loaded: the encoders are untouched too
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    init_from_checkpoint(model, path)  # the encoders fit; the queue is not asked for
    assert _equal(model.encoder_q, source.encoder_q)


def test_a_file_without_encoder_q_or_queue_is_named(tmp_path):
    path = tmp_path / "bank.pth.tar"
    torch.save({"state_dict": {"module.bank": torch.zeros(4, 2)}}, path)
    with pytest.raises(CheckpointError, match="has no encoder_q"):
        init_from_checkpoint(_model(), path)
    source = _model("model.method=end_to_end")
    torch.save({"state_dict": ckpt_io.to_official(source.state_dict())}, path)
    with pytest.raises(CheckpointError, match="holds no queue"):
        init_from_checkpoint(_model(), path, queue=True)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused_unrun(tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refused to load .*it needs posix.system"):
        init_from_checkpoint(_model(), path)
    assert not marker.exists()


def test_the_init_flag_sets_run_init_and_excludes_resume(tmp_path, capsys):
    from moco.cli import main

    assert main(["pretrain", "--init", str(tmp_path / "x.pth.tar"), "--print-config"]) == 0
    assert f"init: {tmp_path / 'x.pth.tar'}" in capsys.readouterr().out
    assert main(["pretrain", "--init", "a.pth.tar", "--resume", "b.pth.tar"]) == 1
    assert "--init starts a new run" in capsys.readouterr().err


def test_a_new_run_starts_from_the_checkpoint(tiny_config, tmp_path, monkeypatch):
    """Through the engine: the run's first checkpoint (epoch 0, before any step) holds the
    source's encoders and queue, and training goes on from there at step 0."""
    from moco import pretrain

    source = _scramble(_model())
    path = _official(tmp_path / "official.pth.tar", source)
    saved: list[dict] = []
    real_save = ckpt_io.save_atomic

    def keep(obj, where):  # type: ignore[no-untyped-def]
        real_save(obj, where)
        saved.append(torch.load(where, weights_only=True))  # a copy: the live tensors move on

    monkeypatch.setattr(ckpt_io, "save_atomic", keep)
    pretrain(tiny_config(f"run.init={path}", "run.init_queue=true", "eval.knn_every=0"))
    first = ckpt_io.from_official(saved[0]["state_dict"])
    assert saved[0]["epoch"] == 0 and saved[0]["step"] == 0
    for key, value in source.state_dict().items():
        assert torch.equal(first[key], value), key
    assert saved[-1]["epoch"] == 1 and saved[-1]["step"] == 4
    last = ckpt_io.from_official(saved[-1]["state_dict"])
    assert not torch.equal(last["encoder_q.conv1.weight"], source.encoder_q.conv1.weight)
