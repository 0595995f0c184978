"""Dataset download against a real HTTP server on 127.0.0.1 that supports Range requests.

The server hands out a tiny archive in the official CIFAR-10 format, so the real download,
resume, checksum and extraction code runs end to end without internet.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from moco.cli import main
from moco.data.download import DATASETS, DownloadError, download

ARCHIVE = "cifar-10-python.tar.gz"
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Server(ThreadingHTTPServer):
    """Serves files from ``root``; records (path, Range header) of every request."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.honour_range = True  # False: answer 200 with the whole file, like some servers
        self.cut_at: int | None = None  # announce the whole length, then hang up after N bytes

    def url(self, name: str = ARCHIVE) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        if self.path == "/broken":
            self.send_error(500)
            return
        f = srv.root / self.path.lstrip("/")
        if not f.is_file():
            self.send_error(404)
            return
        data = f.read_bytes()
        start = 0
        if rng and srv.honour_range:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_at is not None:
            body = body[: srv.cut_at]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must not stand between us and 127.0.0.1."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def make_cifar10_archive(path: Path, n: int = 4, extra: list[str] | None = None) -> dict:
    """A cifar-10-python.tar.gz in the official layout with ``n`` random images per batch.

    ``extra`` adds members with those names verbatim (for the unsafe-member tests)."""
    rng = np.random.default_rng(0)
    files = {
        b: {
            b"batch_label": b.encode(),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        for b in BATCHES
    }
    files["batches.meta"] = {
        b"label_names": [c.encode() for c in ("airplane", "automobile", "bird", "cat", "deer",
                                               "dog", "frog", "horse", "ship", "truck")],
        b"num_cases_per_batch": n,
        b"num_vis": 3072,
    }  # fmt: skip
    with tarfile.open(path, "w:gz") as tar:
        d = tarfile.TarInfo("cifar-10-batches-py")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        members = {f"cifar-10-batches-py/{k}": pickle.dumps(v, 2) for k, v in files.items()}
        members.update({name: b"gotcha" for name in extra or []})
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return files


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Server, bytes, str]]:
    """(server, archive bytes, archive md5), the server running in a background thread."""
    www = tmp_path / "www"
    www.mkdir()
    make_cifar10_archive(www / ARCHIVE)
    blob = (www / ARCHIVE).read_bytes()
    srv = Server(www)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv, blob, hashlib.md5(blob).hexdigest()
    srv.shutdown()
    srv.server_close()
    thread.join()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{ARCHIVE}"


def test_fresh_download_verifies_and_extracts(served, tmp_path):
    srv, blob, md5 = served
    root = tmp_path / "new" / "dir"  # created on the way
    lines: list[str] = []
    r = download("cifar10", root, url=srv.url(), md5=md5, log=lines.append)
    assert srv.requests == [(f"/{ARCHIVE}", None)]
    assert (root / ARCHIVE).read_bytes() == blob and not (root / f"{ARCHIVE}.part").exists()
    assert (r.fetched, r.resumed_from, r.extracted) == (len(blob), 0, True)
    d = root / "cifar-10-batches-py"
    assert sorted(p.name for p in d.iterdir()) == sorted([*BATCHES, "batches.meta"])
    assert r.directory == d and r.data_spec == f"cifar10:{d}"
    with open(d / "data_batch_3", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert batch[b"data"].shape == (4, 3072) and batch[b"data"].dtype == np.uint8
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no temp dir left
    assert any("downloading" in line for line in lines) and any(md5 in line for line in lines)


def test_resume_sends_a_range_request_and_appends(served, tmp_path):
    srv, blob, md5 = served
    k = len(blob) // 3
    (tmp_path / f"{ARCHIVE}.part").write_bytes(blob[:k])
    r = download("cifar10", tmp_path, url=srv.url(), md5=md5, progress=True)  # bar from k on
    assert srv.requests == [(f"/{ARCHIVE}", f"bytes={k}-")]
    assert (r.resumed_from, r.fetched) == (k, len(blob) - k)
    assert (tmp_path / ARCHIVE).read_bytes() == blob


def test_interrupted_download_keeps_the_part_and_resumes(served, tmp_path):
    srv, blob, md5 = served
    srv.cut_at = 5000  # the connection drops after 5000 of the announced bytes
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        download("cifar10", tmp_path, url=srv.url(), md5=md5)
    part = tmp_path / f"{ARCHIVE}.part"
    assert part.read_bytes() == blob[:5000] and not (tmp_path / ARCHIVE).exists()
    srv.cut_at = None
    r = download("cifar10", tmp_path, url=srv.url(), md5=md5)
    assert srv.requests[-1] == (f"/{ARCHIVE}", "bytes=5000-") and r.resumed_from == 5000
    assert (tmp_path / ARCHIVE).read_bytes() == blob


def test_server_ignoring_range_gives_a_correct_file(served, tmp_path):
    srv, blob, md5 = served
    srv.honour_range = False
    # not a prefix of the archive: had it been kept and appended to, the md5 would fail
    (tmp_path / f"{ARCHIVE}.part").write_bytes(b"\xff" * 1000)
    lines: list[str] = []
    r = download("cifar10", tmp_path, url=srv.url(), md5=md5, log=lines.append)
    assert srv.requests == [(f"/{ARCHIVE}", "bytes=1000-")]
    assert r.resumed_from == 0 and (tmp_path / ARCHIVE).read_bytes() == blob
    assert any("ignored" in line for line in lines)


def test_a_whole_part_is_verified_on_416(served, tmp_path):
    """Killed between the last byte and the rename: the server has nothing more to send."""
    srv, blob, md5 = served
    (tmp_path / f"{ARCHIVE}.part").write_bytes(blob)
    r = download("cifar10", tmp_path, url=srv.url(), md5=md5)
    assert srv.requests == [(f"/{ARCHIVE}", f"bytes={len(blob)}-")]
    assert (r.fetched, r.resumed_from) == (0, len(blob))
    assert (tmp_path / ARCHIVE).read_bytes() == blob


def test_wrong_md5_removes_the_part_and_leaves_no_archive(served, tmp_path):
    srv, blob, md5 = served
    with pytest.raises(DownloadError) as exc:
        download("cifar10", tmp_path, url=srv.url())  # the table's md5, not the served file's
    msg = str(exc.value)
    assert "checksum mismatch" in msg and DATASETS["cifar10"].md5 in msg and md5 in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["www"]  # no .part, archive or dir


def test_present_archive_is_not_downloaded_again(served, tmp_path):
    srv, blob, md5 = served
    (tmp_path / ARCHIVE).write_bytes(blob)
    lines: list[str] = []
    r = download("cifar10", tmp_path, url=srv.url(), md5=md5, log=lines.append)
    assert srv.requests == [] and r.fetched == 0 and r.extracted
    assert (tmp_path / "cifar-10-batches-py" / "test_batch").is_file()
    assert any("not downloading" in line for line in lines)
    # and once extracted, a second run does nothing at all
    again = download("cifar10", tmp_path, url=srv.url(), md5=md5)
    assert srv.requests == [] and not again.extracted


def test_present_archive_with_a_wrong_md5_is_reported_not_replaced(served, tmp_path):
    srv, blob, md5 = served
    (tmp_path / ARCHIVE).write_bytes(blob[:100])
    with pytest.raises(DownloadError, match="exists but its md5 is"):
        download("cifar10", tmp_path, url=srv.url(), md5=md5)
    assert srv.requests == [] and (tmp_path / ARCHIVE).read_bytes() == blob[:100]


def test_unreachable_url_fails_fast_with_what_to_do(tmp_path):
    url = closed_port_url()
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as exc:
        download("cifar10", tmp_path, url=url, timeout=3)
    assert time.monotonic() - t0 < 5
    msg = str(exc.value)
    assert f"could not reach {url}" in msg and "cannot connect" in msg
    assert f"place it in {tmp_path} as {ARCHIVE}" in msg and "\n" not in msg
    assert not (tmp_path / f"{ARCHIVE}.part").exists()


@pytest.mark.parametrize(("path", "code"), [(f"nothing-{ARCHIVE}", 404), ("broken", 500)])
def test_http_errors_are_one_clear_line(served, tmp_path, path, code):
    srv, _, md5 = served
    with pytest.raises(DownloadError) as exc:
        download("cifar10", tmp_path, url=srv.url(path), md5=md5)
    msg = str(exc.value)
    assert f"{srv.url(path)} answered HTTP {code}" in msg and "\n" not in msg
    assert not (tmp_path / ARCHIVE).exists()


@pytest.mark.parametrize(
    "evil", ["../evil", "cifar-10-batches-py/../../evil", "/tmp/moco-test-evil"]
)
def test_unsafe_archive_members_are_rejected(tmp_path, evil):
    root = tmp_path / "a" / "b"
    root.mkdir(parents=True)
    make_cifar10_archive(root / ARCHIVE, extra=[evil])
    md5 = hashlib.md5((root / ARCHIVE).read_bytes()).hexdigest()
    with pytest.raises(DownloadError, match=f"refusing to extract member {re.escape(repr(evil))}"):
        download("cifar10", root, md5=md5)  # no network: the archive is already there
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not Path("/tmp/moco-test-evil").exists()
    assert sorted(p.name for p in root.iterdir()) == [ARCHIVE]  # no directory, no temp dir


def test_unknown_name_and_bad_md5(tmp_path):
    with pytest.raises(DownloadError, match="unknown dataset 'cifar11'; available: cifar10, "):
        download("cifar11", tmp_path)
    with pytest.raises(DownloadError, match="32 hexadecimal digits"):
        download("cifar10", tmp_path, md5="abc")


def test_cli_downloads_then_skips_and_prints_the_data_string(served, tmp_path, capsys):
    srv, _, md5 = served
    root = tmp_path / "data"
    argv = ["data", "download", "cifar10", str(root), "--url", srv.url(), "--md5", md5]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"--data cifar10:{root / 'cifar-10-batches-py'}" in out
    assert main(argv) == 0
    assert "already complete" in capsys.readouterr().out and len(srv.requests) == 1


def test_cli_failure_is_one_error_line(tmp_path, capsys):
    argv = ["data", "download", "cifar10", str(tmp_path), "--url", closed_port_url()]
    assert main([*argv, "--timeout", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("moco data: error: could not reach") and err.count("\n") == 1
    assert main(["data", "download", "mnist", str(tmp_path)]) == 1
    assert "unknown dataset 'mnist'" in capsys.readouterr().err


def test_cli_help_names_every_dataset_and_the_mirror_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "download", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in DATASETS)
    assert "--url" in out and "mirror URL" in out and "--md5" in out
