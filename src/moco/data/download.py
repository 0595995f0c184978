"""Download the public datasets that have an official URL, verify them, extract them.

Why more than ``urlretrieve``: the archives are 160 MB to 2.5 GB served by university
machines, so

- a broken connection must not cost the bytes already received: the download streams to
  ``<archive>.part`` and a second run resumes it with an HTTP ``Range`` request;
- a truncated or corrupt file must never pass for the archive: it gets its final name
  (an atomic ``os.replace``) only once its md5 matches the one torchvision uses;
- an archive is untrusted input: no member may land outside the target directory, and the
  extracted directory appears in one rename, so a half-extracted one is never taken as done;
- a machine without internet (most clusters' compute nodes) must get one line saying what
  to do instead: fetch the archive elsewhere and put it in DIR, where the same command
  verifies and extracts it without network.

Only the standard library talks to the network (``urllib.request``); tqdm shows progress.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from moco.errors import DataSourceError

CHUNK = 1 << 20  # bytes per read: small enough for a smooth bar, large enough to be cheap
DEFAULT_TIMEOUT = 10.0  # seconds to connect (and per read): offline fails at once, not in minutes


class DownloadError(DataSourceError):
    """A dataset could not be fetched, verified or extracted; the message says what to do."""


@dataclass(frozen=True)
class RemoteDataset:
    """Where a dataset's official archive lives and what it holds."""

    url: str
    md5: str  # of the archive, as torchvision checks it
    archive: str  # the file name the URL serves
    directory: str  # the one top-level directory the archive extracts to
    files: tuple[str, ...]  # what a complete extraction holds, relative to ``directory``


DATASETS: dict[str, RemoteDataset] = {
    "cifar10": RemoteDataset(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
    ),
    "cifar100": RemoteDataset(
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        ("train", "test", "meta"),
    ),
    "stl10": RemoteDataset(
        "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        "91f7769df0f17e558f3565bffb0c7dfb",
        "stl10_binary.tar.gz",
        "stl10_binary",
        ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin",
         "class_names.txt", "fold_indices.txt"),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class DownloadResult:
    """What :func:`download` did, and the ``--data`` string that reads the result."""

    name: str
    directory: Path  # the extracted dataset
    archive: Path  # the verified archive (absent if the directory was complete already)
    fetched: int  # bytes received over the network in this call
    resumed_from: int  # bytes of an earlier ``.part`` kept (0: fresh download or none)
    extracted: bool  # False: the directory was complete, nothing was done

    @property
    def data_spec(self) -> str:
        """The data-source string for ``--data`` (kind ``name:`` plus the directory)."""
        return f"{self.name}:{self.directory}"


def download(
    name: str,
    root: str | os.PathLike[str],
    *,
    url: str | None = None,
    md5: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> DownloadResult:
    """Fetch dataset ``name`` into ``root`` (created if missing), verify it, extract it.

    Steps, each skipped when its result is already there: download ``root/<archive>`` (or
    resume ``root/<archive>.part``), check its md5, extract ``root/<directory>``. ``url``
    points at a mirror; the table's md5 still applies unless ``md5`` is given too (a mirror
    that repacks the archive). ``timeout`` bounds connecting and every read, so an offline
    machine fails in seconds. ``log`` receives one line per step as it happens (the CLI
    passes ``print``); ``progress`` shows a tqdm bar on stdout.
    """
    if name not in DATASETS:
        raise DownloadError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if md5 is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise DownloadError(f"md5 must be 32 hexadecimal digits, got {md5!r}")
    if not timeout > 0:
        raise DownloadError(f"timeout must be a positive number of seconds, got {timeout}")
    say = log or (lambda _: None)
    spec = DATASETS[name]
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    directory, archive = root / spec.directory, root / spec.archive
    expected = (md5 or spec.md5).lower()

    if directory.exists():
        missing = _missing(directory, spec)
        if not missing:
            say(f"{directory} is already complete; nothing to download or extract")
            return DownloadResult(name, directory, archive, 0, 0, extracted=False)
        # we extract in one rename, so this did not come from us: do not guess, do not delete
        raise DownloadError(
            f"{directory} exists but lacks {', '.join(missing)} (not a complete {name} "
            "extraction); move it away or delete it, then run again"
        )

    fetched = resumed = 0
    if archive.exists():
        actual = file_md5(archive)
        if actual != expected:
            raise DownloadError(
                f"{archive} exists but its md5 is {actual}, not the expected {expected} "
                "(an incomplete or different file); delete it and run again to download it"
            )
        say(f"{archive} is present and its md5 matches; not downloading")
    else:
        fetched, resumed = _fetch(url or spec.url, archive, expected, timeout, progress, say)

    say(f"extracting {archive.name} into {directory}")
    _extract(archive, root, spec)
    return DownloadResult(name, directory, archive, fetched, resumed, extracted=True)


def file_md5(path: Path) -> str:
    """Hex md5 of a file, read in chunks (the archives do not fit in memory comfortably)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fetch(
    url: str, archive: Path, md5: str, timeout: float, progress: bool, say: Callable[[str], None]
) -> tuple[int, int]:
    """Bring ``archive`` into existence from ``url`` via ``<archive>.part``, md5-checked.

    Returns (bytes received now, bytes of an earlier ``.part`` kept)."""
    part = archive.with_name(archive.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    resp = _open(url, offset, archive, timeout)
    if resp is None:  # 416: nothing lies after offset, so the .part may be whole already
        if file_md5(part) == md5:
            os.replace(part, archive)
            say(f"{part.name} was already whole; md5 {md5} ok; saved {archive}")
            return 0, offset
        say(f"{part.name} is longer than the file at {url}; downloading from the start")
        offset, resp = 0, _open(url, 0, archive, timeout)
    elif offset and getattr(resp, "status", None) == 206 and _range_start(resp) != offset:
        resp.close()  # a range we did not ask for: start over rather than guess
        say(f"{url} answered another range than bytes {offset}-; downloading from the start")
        offset, resp = 0, _open(url, 0, archive, timeout)
    assert resp is not None  # without a Range header the server has no reason for 416
    with resp:
        status = getattr(resp, "status", None)
        if status not in (200, 206, None):  # None: file:// URLs, which send the whole file
            raise DownloadError(f"{url} answered HTTP {status}, expected 200 or 206")
        if offset and status != 206:
            say(f"the server ignored the request to resume at byte {offset}; starting over")
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        size = f" ({_human(total)} in all)" if total is not None else ""
        say(
            f"resuming {url} at byte {offset} into {part}{size}"
            if offset
            else f"downloading {url} to {part}{size}"
        )
        h = hashlib.md5(usedforsecurity=False)
        if offset:  # the md5 covers the kept bytes too: hash them once, then stream on
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        received = 0
        bar = _progress_bar(archive.name, total, offset, progress)
        try:
            with open(part, "ab" if offset else "wb") as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as err:
            raise DownloadError(
                f"the download of {url} stopped after {offset + received} bytes ({err}); "
                f"run the same command again to resume from {part}"
            ) from err
        finally:
            bar.close()
    if total is not None and offset + received < total:
        raise DownloadError(
            f"the download of {url} stopped after {offset + received} of {total} bytes; "
            f"run the same command again to resume from {part}"
        )
    actual = h.hexdigest()
    if actual != md5:
        part.unlink()
        raise DownloadError(
            f"checksum mismatch for {url}: expected md5 {md5}, got {actual} "
            f"({offset + received} bytes); removed {part}. A mirror or proxy served a "
            "different file: check --url (and --md5 for a mirror's own archive)"
        )
    os.replace(part, archive)  # only a verified file ever carries the final name
    say(f"md5 {md5} ok; saved {archive}")
    return received, offset


def _open(url: str, offset: int, archive: Path, timeout: float) -> Any:
    """The response for ``url`` from byte ``offset`` on (None when the server answers 416);
    any failure to get one becomes a :class:`DownloadError` that says what to do."""
    headers = {"User-Agent": "moco-download/1 (python urllib)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    elsewhere = (
        f"download {archive.name} by other means, place it in {archive.parent} as "
        f"{archive.name}, and run this command again: it then verifies the md5 and extracts "
        "it without network"
    )
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            return None
        raise DownloadError(
            f"{url} answered HTTP {err.code} {err.reason}; check the URL (--url for a "
            f"mirror) or {elsewhere}"
        ) from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        raise DownloadError(
            f"could not reach {url} ({reason}): this machine cannot connect to it (offline, "
            f"a firewall or proxy, or the server is down); {elsewhere}"
        ) from err


def _range_start(resp: Any) -> int | None:
    """First byte of a 206 answer, from its ``Content-Range: bytes START-END/TOTAL``."""
    m = re.match(r"bytes\s+(\d+)-", resp.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _progress_bar(desc: str, total: int | None, initial: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
        file=sys.stdout,
    )


def _human(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def _missing(directory: Path, spec: RemoteDataset) -> list[str]:
    return [f for f in spec.files if not (directory / f).is_file()]


def _extract(archive: Path, root: Path, spec: RemoteDataset) -> None:
    """Extract ``spec.directory`` from ``archive`` into ``root``, refusing unsafe members.

    The archive unpacks into a temporary directory beside the target and the dataset
    directory is then renamed into place, so ``root/<directory>`` is either complete or
    absent, whatever interrupts us. Every member is checked before it is written (one
    pass over the compressed stream); tarfile's ``data`` filter (Python 3.12, backported
    to 3.10.12 and 3.11.4) is applied on top where the running Python has it."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.directory}.extracting-", dir=root))
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar, archive)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # older patch releases: the manual check above is all there is
                tar.extractall(tmp, members=members)
        extracted = tmp / spec.directory
        missing = _missing(extracted, spec)
        if missing:
            raise DownloadError(
                f"{archive} does not hold {spec.directory}/{', '.join(missing)}; it is not "
                "the expected archive"
            )
        os.replace(extracted, root / spec.directory)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise DownloadError(f"cannot extract {archive}: {err}") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _checked_members(tar: tarfile.TarFile, archive: Path) -> Iterator[tarfile.TarInfo]:
    """The archive's members, each checked before it is handed on for extraction.

    Rejects absolute paths and ``..`` (they would write outside the target) and anything
    but plain files and directories (links can point outside; the datasets have none)."""
    for member in tar:
        path = PurePosixPath(member.name)
        if path.is_absolute() or PureWindowsPath(member.name).anchor or ".." in path.parts:
            raise DownloadError(
                f"{archive}: refusing to extract member {member.name!r}: an absolute path or "
                "'..' would write outside the target directory"
            )
        if not (member.isfile() or member.isdir()):
            raise DownloadError(
                f"{archive}: refusing to extract member {member.name!r}: not a plain file "
                "or directory (links and devices are not part of these datasets)"
            )
        yield member
