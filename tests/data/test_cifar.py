"""CIFAR-10/100 in the official python-pickle format, built here in tmp_path (no download).

The files follow https://www.cs.toronto.edu/~kriz/cifar.html: protocol-2 pickles of dicts
with byte-string keys, ``b"data"`` uint8 (N, 3072) as R, G, B planes of 32x32 row-major.
"""

import json
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from moco import pretrain
from moco.data.sources import DataSourceError, load_source
from moco.engine import checkpoint as ckpt_io
from moco.engine.metrics import read_metrics
from moco.runs.knn import knn_of_checkpoint

CIFAR10_NAMES = [
    b"airplane", b"automobile", b"bird", b"cat", b"deer",
    b"dog", b"frog", b"horse", b"ship", b"truck",
]  # fmt: skip


def _dump(path: Path, obj: dict) -> None:
    """Pickle as the official files: protocol 2, and numpy's array constructor named by
    its Python 2 module (numpy.core, which numpy 2 calls numpy._core). Protocol 2 names
    globals as text lines, so the rename keeps the pickle valid."""
    raw = pickle.dumps(obj, protocol=2)
    path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))


def _rows(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, 32, 32) -> the official (N, 3072) rows."""
    return images.reshape(len(images), 3 * 32 * 32)


def write_cifar10(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with random images, labels 0..9 in turn, the training
    images cut into the five official batches."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    labels = [i % 10 for i in range(n_train)]
    for b, idx in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _dump(
            folder / f"data_batch_{b}",
            {
                b"batch_label": f"training batch {b} of 5".encode(),
                b"labels": [labels[i] for i in idx],
                b"data": _rows(train[idx]),
                b"filenames": [f"img_{i}.png".encode() for i in idx],
            },
        )
    _dump(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [i % 10 for i in range(n_test)],
            b"data": _rows(test),
            b"filenames": [f"test_{i}.png".encode() for i in range(n_test)],
        },
    )
    _dump(
        folder / "batches.meta",
        {b"num_cases_per_batch": 10000, b"label_names": CIFAR10_NAMES, b"num_vis": 3072},
    )
    return folder


def write_tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def test_cifar10_folder_parent_and_archive_give_identical_tensors(tmp_path):
    folder = write_cifar10(tmp_path / "src", n_train=23, n_test=7)
    archive = write_tar_gz(folder, tmp_path / "cifar-10-python.tar.gz")
    a = load_source(f"cifar10:{folder}")
    assert a.train_images.shape == (23, 3, 32, 32) and a.train_images.dtype == torch.uint8
    assert a.test_images.shape == (7, 3, 32, 32)
    assert a.train_labels.tolist() == [i % 10 for i in range(23)]
    assert a.held_out == "test split"
    assert a.classes == tuple(n.decode() for n in CIFAR10_NAMES)
    for other in (load_source(f"cifar10:{folder.parent}"), load_source(f"cifar10:{archive}")):
        for field in ("train_images", "train_labels", "test_images", "test_labels"):
            assert torch.equal(getattr(a, field), getattr(other, field)), field
        assert other.classes == a.classes and other.unlabelled_images is None


def test_cifar10_pixels_land_in_their_channel_and_place(tmp_path):
    folder = write_cifar10(tmp_path, n_train=10, n_test=2)
    # One image written byte by byte from the format description: a red pixel at
    # (row 0, col 1), a green one at (row 2, col 0), a blue one at (row 31, col 30).
    row = np.zeros(3072, np.uint8)
    row[0 * 1024 + 0 * 32 + 1] = 255
    row[1 * 1024 + 2 * 32 + 0] = 200
    row[2 * 1024 + 31 * 32 + 30] = 100
    batch = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")
    batch[b"data"][0] = row
    _dump(folder / "data_batch_1", batch)
    img = load_source(f"cifar10:{folder}").train_images[0]
    assert img[0, 0, 1] == 255 and img[1, 2, 0] == 200 and img[2, 31, 30] == 100
    assert img.sum() == 255 + 200 + 100


def _py2_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch dict opcode by opcode as Python 2's cPickle (protocol 2) wrote the official
    files: str as SHORT_BINSTRING / BINSTRING, numpy's array reduced to
    numpy.core.multiarray._reconstruct with a BUILD state (version, shape, dtype, fortran,
    raw bytes)."""

    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def k(i: int) -> bytes:  # BININT1 / BININT2
        return b"K" + bytes([i]) if i < 256 else b"M" + struct.pack("<H", i)

    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + k(0) + b"\x85" + s(b"b")
    array += b"\x87R(" + k(1) + k(data.shape[0]) + k(data.shape[1]) + b"\x86"
    array += b"cnumpy\ndtype\n" + s(b"u1") + k(0) + k(1) + b"\x87R"
    array += b"(" + k(3) + s(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + k(0) + b"tb"
    array += b"\x89" + s(data.tobytes()) + b"tb"
    label_list = b"](" + b"".join(k(y) for y in labels) + b"e"
    return b"\x80\x02}(" + s(b"data") + array + s(b"labels") + label_list + b"u."


def test_reads_a_batch_pickled_as_python_2_wrote_it(tmp_path):
    folder = write_cifar10(tmp_path, n_train=10, n_test=2)
    rows = np.random.default_rng(2).integers(0, 256, (3, 3072), dtype=np.uint8)
    (folder / "data_batch_2").write_bytes(_py2_pickle(rows, [9, 0, 4]))
    data = load_source(f"cifar10:{folder}")
    assert len(data.train_images) == 11 and data.train_labels[2:5].tolist() == [9, 0, 4]
    assert torch.equal(data.train_images[2:5], torch.from_numpy(rows).view(3, 3, 32, 32))


def test_cifar100_reads_fine_labels_and_names(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    fine_names = [b"apple", b"aquarium_fish", *[f"class_{i}".encode() for i in range(2, 100)]]
    fine = {"train": [0, 1, 99, 42, 7, 1], "test": [99, 0, 3]}
    for split, labels in fine.items():
        _dump(
            folder / split,
            {
                b"filenames": [f"{split}_{i}.png".encode() for i in range(len(labels))],
                b"batch_label": f"{split}ing batch 1 of 1".encode(),
                b"fine_labels": labels,
                b"coarse_labels": [y // 5 for y in labels],
                b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8),
            },
        )
    coarse_names = [f"super_{i}".encode() for i in range(20)]
    _dump(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-100-python")
    for spec in (folder, tmp_path, tmp_path / "cifar-100-python.tar.gz"):
        data = load_source(f"cifar100:{spec}")
        assert data.train_labels.tolist() == fine["train"]
        assert data.test_labels.tolist() == fine["test"]
        assert data.train_images.shape == (6, 3, 32, 32)
        assert data.classes is not None and len(data.classes) == 100
        assert data.classes[:2] == ("apple", "aquarium_fish")
    # a CIFAR-10 folder is not CIFAR-100: the error lists what was expected and found
    with pytest.raises(DataSourceError, match="missing data_batch_1.*found: meta, test, train"):
        load_source(f"cifar10:{folder}")


def test_cifar_errors_name_the_path_and_the_expected_files(tmp_path):
    with pytest.raises(DataSourceError, match="does not exist"):
        load_source(f"cifar10:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="empty.*data_batch_1.*test_batch.*batches.meta"):
        load_source(f"cifar10:{tmp_path / 'empty'}")
    with pytest.raises(DataSourceError, match="missing train, test, meta"):
        load_source(f"cifar100:{tmp_path / 'empty'}")
    not_tar = tmp_path / "data.bin"
    not_tar.write_bytes(b"not a tar archive " * 100)
    with pytest.raises(DataSourceError, match="data.bin: cannot read the tar archive"):
        load_source(f"cifar10:{not_tar}")


def test_corrupt_cifar_files_fail_naming_the_file(tmp_path):
    folder = write_cifar10(tmp_path / "c", n_train=10, n_test=2)
    batch = pickle.loads((folder / "data_batch_3").read_bytes(), encoding="bytes")
    good = (folder / "data_batch_3").read_bytes()
    batch[b"data"] = batch[b"data"][:, :3000]  # not 3072 values per image
    _dump(folder / "data_batch_3", batch)
    with pytest.raises(DataSourceError, match="data_batch_3.*3072"):
        load_source(f"cifar10:{folder}")
    (folder / "data_batch_3").write_bytes(good)

    test = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(test[: len(test) // 2])  # truncated
    with pytest.raises(DataSourceError, match="test_batch: corrupt or truncated"):
        load_source(f"cifar10:{folder}")
    (folder / "test_batch").write_bytes(test)

    batch = pickle.loads(good, encoding="bytes")
    batch[b"labels"] = batch[b"labels"][:-1]  # one label short
    _dump(folder / "data_batch_3", batch)
    with pytest.raises(DataSourceError, match="data_batch_3: 2 images but b'labels'"):
        load_source(f"cifar10:{folder}")
    (folder / "data_batch_3").write_bytes(good)

    archive = write_tar_gz(folder, tmp_path / "c.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(archive[: len(archive) // 2])
    with pytest.raises(DataSourceError, match="cut.tar.gz"):
        load_source(f"cifar10:{tmp_path / 'cut.tar.gz'}")


def test_a_pickle_naming_other_globals_is_refused_not_run(tmp_path):
    folder = write_cifar10(tmp_path, n_train=10, n_test=2)
    # harmless stand-in for a malicious global (os.system would be called while loading)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": Path("x")}, protocol=2))
    with pytest.raises(DataSourceError, match="batches.meta.*refusing to load pathlib"):
        load_source(f"cifar10:{folder}")


def test_pretrain_end_to_end_on_a_cifar10_folder(tmp_path, tiny_config):
    folder = write_cifar10(tmp_path / "data", n_train=128, n_test=32)
    # batch 32: 4 steps over 128 images; views at CIFAR's own 32 px; k 5 of 128 images
    cfg = tiny_config(
        "optim.batch_size=32", "augment.size=32", "eval.knn_k=5", data=f"cifar10:{folder}"
    )
    result = pretrain(cfg)
    ck = ckpt_io.load(result.checkpoint)
    assert ck["epoch"] == 1 and ck["step"] == 4  # 128 images / batch 32
    assert ck["derived"]["in_chans"] == 3 and ck["derived"]["train_images"] == 128
    assert ck["derived"]["held_out_images"] == 32
    # random images: kNN sits at chance, so check the number is the checkpoint's kNN,
    # recomputed from the saved weights, and the one logged for the last epoch
    assert result.knn_top1 is not None
    again = knn_of_checkpoint(result.checkpoint, k=5, t=cfg.eval.knn_t, device="cpu")
    assert again["test_images"] == 32 and again["top1"] == pytest.approx(result.knn_top1)
    logged = [r for r in read_metrics(result.run_dir) if r["kind"] == "knn"]
    assert [r["epoch"] for r in logged] == [0, 1] and logged[-1]["top1"] == result.knn_top1
    saved = json.loads((result.run_dir / "result.json").read_text())
    assert saved["data"].startswith("CIFAR-10 at ") and saved["held_out"] == "test split"
