"""Atomic file writes: a finished result is never left half-written or lost.

A write that fails because the disk is full or the folder is read-only ends in one line naming the
folder and what to do (``DiskFullError``, ``NotWritableError``), never a bare errno, and leaves no
temporary file behind.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lesionbench.errors import LesionBenchError

#: errno values of a folder that refuses writes: permissions, a read-only mount.
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
#: What libraries that wrap the OS error in their own exception (safetensors) say for ENOSPC.
_NO_SPACE_TEXT = ("No space left on device", "os error 28")


class DiskFullError(LesionBenchError, OSError):
    """No space left while writing (one line: the folder, the space needed and the space free).

    An ``OSError`` with errno ENOSPC as well, so code that handles a full disk by errno still does."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.errno = errno.ENOSPC


class NotWritableError(LesionBenchError, OSError):
    """A folder that refuses writes (read-only, not ours); one line naming it and the fix."""

    def __init__(self, message: str, code: int = errno.EACCES) -> None:
        super().__init__(message)
        self.errno = code


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC / EDQUOT, also when a library re-raised it as its own error (safetensors' "I/O error")."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return not isinstance(err, OSError) and any(text in str(err) for text in _NO_SPACE_TEXT)


def is_not_writable(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in NOT_WRITABLE


def existing_parent(path: str | Path) -> Path:
    """``path`` or its nearest ancestor that exists (where the disk space and the permissions are)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _folder_of(path: Path) -> Path:
    """The folder that refused a write of ``path``: the nearest existing folder on its way."""
    found = existing_parent(path)
    return found if found.is_dir() else found.parent


def free_bytes(path: str | Path) -> int | None:
    try:
        return shutil.disk_usage(existing_parent(path)).free
    except OSError:
        return None


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


def disk_full_error(folder: str | Path, what: str, needed: int | None, fix: str = "") -> DiskFullError:
    """One line: the folder, what was being written, the space it needs and the space free, the fix."""
    need = f"needs about {human_bytes(needed)}, " if needed else ""
    return DiskFullError(f"{folder}: no space left on the device writing {what}: {need}"
                         f"{human_bytes(free_bytes(folder))} free; "
                         f"{fix or 'free some space (or write elsewhere)'}, then run the command again")


def not_writable_error(folder: str | Path, err: OSError, fix: str = "") -> NotWritableError:
    """One line: the folder that refused the write, why, and what to do."""
    why = err.strerror or type(err).__name__
    return NotWritableError(f"{folder}: cannot write there ({why}); "
                            f"{fix or 'choose a writable folder (e.g. with --out) or make this one writable'}",
                            err.errno or errno.EACCES)


def refused_write(err: OSError, fix: str = "") -> LesionBenchError | None:
    """The one-line error for a write that a full disk or a refusing folder stopped (the folder
    named from the error's file name), or None when ``err`` is something else."""
    if isinstance(err, (DiskFullError, NotWritableError)):
        return err
    target = Path(os.fsdecode(err.filename)) if err.filename else None
    if is_disk_full(err):
        return disk_full_error(target.parent if target else "the output folder", target.name if target else "a file",
                               None, fix)
    if is_not_writable(err):
        return not_writable_error(_folder_of(target) if target else "the output folder", err, fix)
    return None


def _refused(path: Path, err: BaseException, needed: int | None) -> BaseException:
    """The one-line error for a write of ``path`` that failed, else ``err`` itself."""
    if isinstance(err, (DiskFullError, NotWritableError)):
        return err
    if is_disk_full(err):
        return disk_full_error(path.parent, path.name, needed)
    if is_not_writable(err):
        return not_writable_error(_folder_of(path), err)
    return err


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write to a temporary file in the same folder, then rename over the target."""
    path, data = Path(path), text.encode()
    try:
        with _temporary(path, len(data)) as (fd, tmp):
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except OSError as err:
        raise _refused(path, err, len(data)) from None
    return path


@contextmanager
def atomic_path(path: str | Path, size: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` for a library that writes files itself (safetensors);
    renamed over ``path`` when the block ends, removed if it fails (a full disk leaves no temp).

    A full disk or a read-only folder, whatever the writer raised, ends in ``DiskFullError`` (naming
    the folder, ``size`` needed and the space free) or ``NotWritableError``."""
    path = Path(path)
    with _temporary(path, size) as (fd, tmp):
        os.close(fd)
        try:
            yield tmp
            os.replace(tmp, path)
        except Exception as err:  # noqa: BLE001 - a library's own error for ENOSPC (safetensors) included
            refused = _refused(path, err, size)
            if refused is err:
                raise
            raise refused from None


@contextmanager
def _temporary(path: Path, size: int | None) -> Iterator[tuple[int, Path]]:
    """(open descriptor, path) of a new temporary file beside ``path``, following the umask; removed
    unless it was renamed. A refused folder or a full disk while making it is one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise _refused(path, err, size) from None
    try:
        os.chmod(name, 0o666 & ~umask())  # mkstemp makes 0600; a lab's shared folders follow the umask
        yield fd, Path(name)
    finally:
        Path(name).unlink(missing_ok=True)  # gone already once renamed over the target


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_csv(path: str | Path, rows: Iterable[dict[str, Any]]) -> Path:
    rows = list(rows)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def umask() -> int:
    """The process's umask (read by setting and restoring it; Python has no getter before 3.13)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
