"""Files listkit writes that hold secrets or personal data: created private.

The rule: such a file is readable and writable by its owner only (0600),
whatever the umask, from the moment it exists (it is created with that
mode, never created open and then narrowed). ``.env`` (passwords, the
signing secret), the database and its WAL and SHM files (SQLite gives them
the database's mode), ``--errors`` files, ``.eml`` output, the send lock
and the send marks all go through here.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Any

PRIVATE = 0o600


def _private_opener(path: str, flags: int) -> int:
    fd = os.open(path, flags, PRIVATE)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, PRIVATE)  # a file that was already there: ours to narrow
    except BaseException:
        os.close(fd)
        raise
    return fd


def private_fd(path: Path | str, flags: int) -> int:
    """``os.open(path, flags)``, the file created (or narrowed) to mode 0600."""
    return _private_opener(str(path), flags)


def private_open(path: Path | str, mode: str = "w", **kwargs: Any) -> IO:
    """``open(path, mode)``, the file created (or narrowed) to mode 0600.

    A write that fails (a full disk) raises an OSError that names the file,
    as a failed open does, so the error shown can say which file it was.
    """
    return _Named(open(path, mode, opener=_private_opener, **kwargs), str(path))


class _Named:
    """A file object whose write, flush and close errors carry its name."""

    def __init__(self, file: IO, name: str):
        self._file = file
        self._name = name

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._file, method)(*args)
        except OSError as e:
            if e.filename is not None:
                raise
            raise OSError(e.errno, e.strerror, self._name) from None

    def write(self, data: Any) -> int:
        return self._call("write", data)

    def flush(self) -> None:
        self._call("flush")

    def close(self) -> None:
        self._call("close")

    def __enter__(self) -> _Named:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._file, attr)


def write_private(path: Path | str, data: bytes | str) -> None:
    """Write ``data`` to a file of mode 0600."""
    if isinstance(data, str):
        with private_open(path, "w", encoding="utf-8") as f:
            f.write(data)
    else:
        with private_open(path, "wb") as f:
            f.write(data)


def create_private(path: Path | str) -> bool:
    """Create ``path`` empty with mode 0600 if it does not exist; True if created."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
    except FileExistsError:
        return False
    return True
