import gzip

import numpy as np
import pytest

from moco.data.idx import IDXFormatError, read_idx, write_idx


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_round_trip_raw_and_gzip(tmp_path, name):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, arr)
    out = read_idx(tmp_path / name)
    assert out.dtype == np.uint8 and np.array_equal(out, arr)


def test_reads_big_endian_int32(tmp_path):
    body = (
        bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + np.array([1, -2, 70000], ">i4").tobytes()
    )
    (tmp_path / "a.idx").write_bytes(body)
    assert read_idx(tmp_path / "a.idx").tolist() == [1, -2, 70000]


def test_truncated_file_is_a_clear_error(tmp_path):
    arr = np.zeros((10, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t-idx3-ubyte", arr)
    data = (tmp_path / "t-idx3-ubyte").read_bytes()
    (tmp_path / "t-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(IDXFormatError, match="truncated"):
        read_idx(tmp_path / "t-idx3-ubyte")
    (tmp_path / "t.gz").write_bytes(gzip.compress(data)[:-20])  # cut gzip stream
    with pytest.raises(IDXFormatError, match="cannot read"):
        read_idx(tmp_path / "t.gz")


def test_bad_magic(tmp_path):
    (tmp_path / "b").write_bytes(b"\x89PNG....")
    with pytest.raises(IDXFormatError, match="magic"):
        read_idx(tmp_path / "b")
