"""Opening the files a deployment names (the source CSV, the source mapping) without trusting them.

A path may name a FIFO (opening or reading it would block the run, and its lock on the warehouse,
for good), a device such as /dev/zero (endless), a directory or a symlink loop. Each is refused
from the open file itself (fstat), so nothing can be swapped in between a check and the read.
"""

import os
import stat
from pathlib import Path
from typing import BinaryIO


class Unreadable(Exception):
    """Why a file cannot be read, as a phrase to follow its name; `missing` when it is not there."""

    def __init__(self, problem: str, missing: bool = False):
        super().__init__(problem)
        self.problem = problem
        self.missing = missing


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """The file opened for binary reading, provided it is a regular file (symlinks followed).

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unreadable("file not found", missing=True) from None
    except OSError as error:
        raise Unreadable(f"cannot be read ({error.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unreadable("is not a regular file (a directory, FIFO or device cannot be read)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def absolute(path: str | os.PathLike) -> Path:
    """The path made absolute, symlinks resolved where they resolve (a loop stays as written)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        return Path(os.path.abspath(path))
