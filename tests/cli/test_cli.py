"""The command line: listing, bad input with clear messages, pretrain + knn end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from moco.cli import main

from ..conftest import TINY_OVERRIDES


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("default", "moco_v1_imagenet", "moco_v2_imagenet", "moco_cifar_demo"):
        assert name in out


def test_help_everywhere():
    for argv in (["--help"], ["pretrain", "--help"], ["knn", "--help"], ["presets", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pretrain", "--data", "/no/such/dir"], "data source '/no/such/dir' does not exist"),
        (["pretrain", "--preset", "moco_v9"], "unknown preset 'moco_v9'; available"),
        (["pretrain", "optim.epochz=3"], "unknown config key 'optim.epochz'"),
        (["pretrain", "model.arch=vgg"], "model.arch"),
        (["knn", "/no/such/checkpoint.pth.tar"], "does not exist"),
    ],
)
def test_bad_input_fails_with_a_clear_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_truncated_idx_file_is_reported(tmp_path, capsys, tiny_idx):
    f = tiny_idx / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:500])
    assert main(["pretrain", "--data", str(tiny_idx), "--out", str(tmp_path / "r")]) == 1
    assert "cannot read IDX data" in capsys.readouterr().err


def test_pretrain_then_knn_from_the_command_line(tmp_path, tiny_idx, capsys):
    out = tmp_path / "runs"
    cmd = [
        sys.executable,
        "-m",
        "moco",
        "pretrain",
        "--data",
        str(tiny_idx),
        "--out",
        str(out),
        *TINY_OVERRIDES,
        "run.name=cli",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("done: 1 epochs, kNN top-1 ") and "random init" in last
    result = json.loads((out / "cli" / "result.json").read_text())
    knn = subprocess.run(
        [sys.executable, "-m", "moco", "knn", str(out / "cli"), "--k", "20"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"kNN top-1 {result['knn_top1']:.4f}" in knn.stdout  # same number, recomputed
    assert json.loads((out / "cli" / "knn-k20-t0.1-backbone-epoch1.json").read_text())["k"] == 20
    assert main(["lincls", str(out / "cli"), "--protocol", "small", "--epochs", "2"]) == 0
    record = json.loads((out / "cli" / "lincls-small-e2-lr30-epoch1.json").read_text())
    assert 0.0 <= record["test_top1"] <= record["test_top5"] <= 1.0
    assert record["protocol"]["epochs"] == 2 and record["selected_epoch"] in (1, 2)
    # 2 epochs barely train the probe (observed test top-1 0.20, val 0.12 then 0.15), so
    # check the record against itself: the selection is the curve's first best epoch,
    # and the top-1 a whole number of the 64 test images
    val = [c["val_top1"] for c in record["curve"]]
    assert record["selected_epoch"] == val.index(max(val)) + 1
    assert record["val_top1_selected"] == max(val)
    assert record["test_images"] == 64 and (record["test_top1"] * 64).is_integer()
    assert {"checkpoint", "data", "validation", "test_split", "version"} <= set(record)
    assert main(["finetune", str(out / "cli"), "--epochs", "1", "--batch-size", "64"]) == 0
    tuned = json.loads((out / "cli" / "finetune-e1-lr0.05-b64-epoch1.json").read_text())
    assert tuned["protocol"]["norm_features"] and tuned["selected_epoch"] == 1
    assert main(["embed", str(out / "cli"), "--out", str(tmp_path / "emb")]) == 0
    train = np.load(tmp_path / "emb" / "train_features.npy")
    assert train.shape == (256, 64) and train.dtype == np.float32  # width 0.125 of 512
    assert np.load(tmp_path / "emb" / "test_labels.npy").shape == (64,)
    assert len((tmp_path / "emb" / "test_sources.txt").read_text().splitlines()) == 64
    assert main(["embed", str(out / "cli"), "--out", str(tmp_path / "emb")]) == 1  # not empty
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["report", str(out / "cli"), "--points", "64"]) == 0
    page = (out / "cli" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4  # curves, health, t-SNE, retrieval
    assert "linear top-1 / top-5 (epoch 1)" in page and "kNN top-1 (random init)" in page
    assert "fine-tuned top-1 / top-5 (epoch 1)" in page and "k=20, t=0.1" in page
    assert f"{result['knn_top1']:.4f}" in page
    assert all((out / "cli" / "report" / f).stat().st_size > 5000
               for f in ("curves.png", "health.png", "tsne.png", "retrieval.png"))  # fmt: skip


def test_report_of_a_directory_that_is_no_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1  # not a run directory
    err = capsys.readouterr().err
    assert err.startswith("moco report: error: ") and "not a run directory" in err
    assert err.count("\n") == 1


def test_export_torchvision_from_the_command_line(tmp_path, capsys):
    import torch
    import torchvision

    from moco.core.moco import MoCo
    from moco.encoders.resnet import build_encoder
    from moco.engine import checkpoint as ckpt_io

    model = MoCo(build_encoder("resnet18", 128, mlp=True), 128, 256)
    ckpt = tmp_path / "official.pth.tar"  # the official layout: state_dict + arch
    torch.save({"arch": "resnet18", "state_dict": ckpt_io.to_official(model.state_dict())}, ckpt)
    assert (
        main(["export", str(ckpt), "--out", str(tmp_path / "r18.pth"), "--num-classes", "7"]) == 0
    )
    assert "torchvision resnet18" in capsys.readouterr().out
    net = torchvision.models.resnet18(num_classes=7)
    net.load_state_dict(torch.load(tmp_path / "r18.pth"), strict=True)
    assert torch.equal(net.layer1[0].conv1.weight, model.encoder_q.layer1[0].conv1.weight)
    d2 = tmp_path / "r18.pkl"
    assert main(["export", str(ckpt), "--format", "detectron2", "--out", str(d2)]) == 0
    from moco.export.detectron2 import load_detectron2

    assert "res5.1.conv2.norm.running_mean" in load_detectron2(d2)
