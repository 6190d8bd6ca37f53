"""Atomic file writes: a file either appears complete under its final name or not at all.

Both helpers write to a hidden temporary file in the *same directory* as the target (so the final
``os.replace`` is a rename within one filesystem, which POSIX and Windows make atomic), flush it to
disk, and only then rename it onto the final name. On any exception, ``KeyboardInterrupt``
included, the temporary file is deleted and whatever was at the final path before is untouched.

A process killed with SIGKILL can still leave a hidden ``.<name>.<random>.tmp<suffix>`` file
behind; it never shadows the real output.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write"]

_WRITE_MODES = {"w", "wt", "wb", "w+", "w+b", "wb+", "w+t", "wt+"}


def _reserve_temp(path: Path) -> Path:
    """Create an empty, uniquely named temp file beside ``path`` and return its name.

    The temp name keeps ``path``'s suffix so that writers which pick a format from the file name
    (PIL ``save``, PyAV ``open(..., "w")``) behave as they would for the final name. The file is
    created with ``O_EXCL`` and mode 0o666 so the process umask applies, exactly as for a normal
    ``open(path, "w")`` (``tempfile.mkstemp`` would force 0o600 on the final file).
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.tmp{path.suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; best effort (not possible on Windows, some network filesystems)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass


@contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", *, encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a file object whose contents replace ``path`` only if the ``with`` block succeeds.

    ``mode`` is a write mode (``"wb"``, ``"w"``, ``"wt"``, optionally with ``+``); append modes
    make no sense for a file that is replaced whole and raise ``ValueError``. Text modes default
    to UTF-8. On success the data is flushed and fsync'ed before the rename, so a crash right
    after the ``with`` block cannot leave a truncated file under the final name.
    """
    if mode not in _WRITE_MODES:
        raise ValueError(f"atomic_write mode must be one of {sorted(_WRITE_MODES)}, got {mode!r}")
    path = Path(path)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    tmp = _reserve_temp(path)
    try:
        with open(tmp, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    _fsync_dir(path.parent)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to (for APIs that want a file name); it becomes ``path``.

    The yielded path already exists as an empty file, has the same suffix as ``path`` and lives
    in the same directory. Write it completely inside the ``with`` block (e.g.
    ``image.save(tmp)`` or ``av.open(tmp, "w")`` *and close it*); on exit it is fsync'ed and
    renamed onto ``path``. On an exception it is deleted and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _reserve_temp(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    _fsync_dir(path.parent)
