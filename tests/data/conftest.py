"""Fixtures of the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .image_files import photos as make_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, int]]:
    return make_photos(tmp_path_factory.mktemp("photos"))
