"""Atomic writes: complete file or nothing, old file survives failures, no temp files left."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from effsam2.io import atomic_path, atomic_write


class Boom(Exception):
    pass


def test_success_writes_and_leaves_only_the_file(tmp_path):
    target = tmp_path / "out.json"
    with atomic_write(target, "w") as f:
        f.write("héllo")
        assert not target.exists()  # nothing visible under the final name before the end
    assert target.read_text(encoding="utf-8") == "héllo"
    assert os.listdir(tmp_path) == ["out.json"]


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_failure_mid_write_leaves_nothing(tmp_path, exc):
    target = tmp_path / "out.bin"
    with pytest.raises(exc), atomic_write(target) as f:
        f.write(b"x" * 10000)
        raise exc()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_existing_file_survives_failed_overwrite(tmp_path, exc):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(exc), atomic_write(target, "wb") as f:
        f.write(b"new, half written")
        raise exc()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]
    with atomic_write(target, "wb") as f:  # a successful overwrite replaces it
        f.write(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_path_with_a_filename_writer(tmp_path):
    target = tmp_path / "mask.png"
    target.write_bytes(b"older")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp != target
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp)  # PIL picks PNG from the suffix
        assert target.read_bytes() == b"older"
    assert Image.open(target).format == "PNG"
    assert os.listdir(tmp_path) == ["mask.png"]


def test_atomic_path_failure(tmp_path):
    target = tmp_path / "video.mp4"
    target.write_bytes(b"previous video")
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise Boom()
    assert target.read_bytes() == b"previous video"
    assert os.listdir(tmp_path) == ["video.mp4"]


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "a.txt", "w") as f:
            f.write("x")
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644


def test_bad_mode_and_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "no_such_dir" / "x"):
        pass
    assert os.listdir(tmp_path) == []
