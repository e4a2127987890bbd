"""Writing files so that a reader never sees half of one: the one atomic-write primitive.

Every file the library leaves on disk — checkpoints, data caches, figures, results.json, reports —
goes through ``write_atomic`` (a temporary file in the same folder, fsync, ``os.replace``), and
``file_record`` / ``sha256`` describe what was written so that "up to date" can be checked;
``cannot_write`` says in one line why a write failed. Nothing here knows what the files mean.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["cannot_write", "file_record", "sha256", "write_atomic"]


def write_atomic(
    path: str | os.PathLike[str], data: str | bytes | Callable[[BinaryIO], object]
) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Readers see the old file or the new one, never half of one. Parent folders are created.
    ``data`` is text (written as UTF-8), bytes, or a function that writes into the open binary
    handle it is given (``lambda f: torch.save(state, f)``, ``lambda f: np.savez(f, **arrays)``).

    Returns:
        The path written.

    Raises:
        OSError: (full disk, read-only folder...) naming ``path``, not the temporary file.

    Example:
        >>> import tempfile
        >>> write_atomic(Path(tempfile.mkdtemp()) / "a" / "x.txt", "hello").read_text()
        'hello'
    """
    target = Path(path)
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(target)) from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return target


def sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str | os.PathLike[str]) -> dict[str, int | str]:
    """``{"size": bytes, "sha256": hex}`` of a file: what a later check compares against."""
    return {"size": Path(path).stat().st_size, "sha256": sha256(path)}


def cannot_write(exc: OSError, where: str | os.PathLike[str]) -> str:
    """One line naming what could not be written and why (``exc``'s file, else ``where``).

    Example:
        >>> import errno
        >>> cannot_write(OSError(errno.ENOSPC, "No space left on device", "/r/a.json"), "/r")
        'cannot write /r/a.json: No space left on device'
    """
    return f"cannot write {exc.filename or where}: {exc.strerror or exc}"
