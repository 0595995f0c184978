"""Interrupted + resumed == uninterrupted; checkpoints keep the official layout."""

import pytest
import torch

from moco import pretrain, resume
from moco.engine import checkpoint as ckpt_io
from moco.engine import train as train_mod


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_config, tmp_path, monkeypatch):
    # on CPU: bitwise equality is a CPU guarantee (cuDNN may pick non-deterministic kernels)
    full = pretrain(tiny_config("optim.epochs=3", "run.name=full", "run.device=cpu"))

    saves = []
    real_save = ckpt_io.save_atomic

    def save_then_crash(obj, path):
        real_save(obj, path)
        saves.append(obj["epoch"])
        if obj["epoch"] == 2:
            raise KeyboardInterrupt  # killed right after the epoch-2 checkpoint

    monkeypatch.setattr(train_mod.ckpt_io, "save_atomic", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_config("optim.epochs=3", "run.name=cut", "run.device=cpu"))
    assert saves == [0, 1, 2]
    monkeypatch.setattr(train_mod.ckpt_io, "save_atomic", real_save)
    resumed = resume(tmp_path / "cut")

    a = ckpt_io.load(full.checkpoint)
    b = ckpt_io.load(resumed.checkpoint)
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"] == 12
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert resumed.knn_top1 == full.knn_top1
    assert resumed.knn_top1_init == full.knn_top1_init


def test_checkpoint_layout_is_official_and_complete(tiny_config):
    cfg = tiny_config("run.name=one")
    result = pretrain(cfg)
    ck = ckpt_io.load(result.checkpoint)
    keys = ck["state_dict"].keys()
    assert {"module.queue", "module.queue_ptr"} <= set(keys)
    assert all(
        k.startswith(("module.encoder_q.", "module.encoder_k.", "module.queue")) for k in keys
    )
    assert {
        "epoch",
        "arch",
        "optimizer",
        "scaler",
        "step",
        "rng",
        "config",
        "derived",
        "version",
    } <= set(ck)
    assert ck["arch"] == "resnet18" and ck["derived"]["lr"] == pytest.approx(0.06 * 64 / 256)
    run = result.run_dir
    assert {
        "config.yaml",
        "derived.json",
        "metrics.jsonl",
        "tb",
        "checkpoint.pth.tar",
        "result.json",
    } <= {p.name for p in run.iterdir()}
    assert not list(run.glob(".*tmp*"))  # atomic writes leave no temporary file


def test_resume_refuses_to_change_the_recipe(tiny_config, tmp_path):
    cfg = tiny_config("run.name=r")
    pretrain(cfg)
    with pytest.raises(ValueError, match="cannot change 'model.momentum'"):
        resume(tmp_path / "r", ["model.momentum=0.5"])


def test_existing_run_directory_is_never_overwritten(tiny_config, tmp_path):
    cfg = tiny_config("run.name=same")
    pretrain(cfg)
    before = (tmp_path / "same" / "checkpoint.pth.tar").read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        pretrain(cfg)
    assert (tmp_path / "same" / "checkpoint.pth.tar").read_bytes() == before


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config("optim.epochs=3", "run.name=nan")
    real_step = train_mod.train_step
    calls = []

    def poisoned(model, *args, **kwargs):
        out = real_step(model, *args, **kwargs)
        calls.append(1)
        if len(calls) == 6:  # in epoch 2 (4 steps per epoch)
            return out._replace(loss=out.loss * float("nan"))
        return out

    monkeypatch.setattr(train_mod, "train_step", poisoned)
    with pytest.raises(train_mod.NonFiniteLossError, match="last good checkpoint"):
        pretrain(cfg)
    ck = ckpt_io.load(tmp_path / "nan")
    assert ck["epoch"] == 1
    assert all(torch.isfinite(v.float()).all() for v in ck["state_dict"].values())


def test_official_lincls_key_logic_reads_our_checkpoint_into_torchvision():
    """main_lincls.py keeps ``module.encoder_q.*`` minus ``fc`` and strips the prefix."""
    import torchvision

    from moco.core.moco import MoCo
    from moco.encoders.resnet import build_encoder

    model = MoCo(build_encoder("resnet18", 128, mlp=True, bn_splits=8), 128, 256)
    state = ckpt_io.to_official(model.state_dict())
    backbone = {
        k[len("module.encoder_q.") :]: v
        for k, v in state.items()
        if k.startswith("module.encoder_q") and not k.startswith("module.encoder_q.fc")
    }
    net = torchvision.models.resnet18()
    missing, unexpected = net.load_state_dict(backbone, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    assert torch.equal(net.conv1.weight, model.encoder_q.conv1.weight)
