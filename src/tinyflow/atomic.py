"""Atomic file writes: a temporary name in the target's folder, renamed over the target when complete.

A reader of the target sees either the old file (or none) or the whole new one, never a torn write: the rename
is atomic within one file system, which is why the temporary name is made next to the target. The file (folder)
gets the mode a plain `open()` (`mkdir`) would give it under the umask, not `tempfile`'s private 0600 (0700).
(docs/design.md §11)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike[str]


def _umask() -> int:
    """The process's umask (read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: PathLike, suffix: str = "", directory: bool = False) -> Iterator[Path]:
    """A fresh temporary path next to `target` (an empty file, or an empty folder with `directory=True`).

    Fill it inside the `with` block; on a clean exit it is renamed onto `target` (a folder only onto a target that
    does not exist), on an error it is removed and the error goes on.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}."
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix or ".tmp", dir=target.parent)
        try:  # mkstemp makes 0600; the file gets the mode a plain open() would give it
            os.fchmod(fd, 0o666 & ~_umask())
        finally:
            os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        _remove(tmp)
        if exc.filename is None:  # a failed write() names no file: name the one being written (a full disk)
            exc.filename = str(target)
        raise
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_open(target: PathLike, mode: str = "w", suffix: str = "") -> Iterator[IO[Any]]:
    """An open handle (`mode` "w" or "wb") on a temporary file that replaces `target`, flushed to disk, on a clean
    exit."""
    with atomic_path(target, suffix) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_copy(src: PathLike, dst: PathLike) -> None:
    """Copy the file `src` to `dst` atomically."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
