"""Decode once, resize once, memory-map after that.

Why: decoding 2000×1500 JPEGs every epoch dominates small-model training. Each
(dataset, part, size) is stored as uint8 ``images`` N×H×W×3 and ``masks`` N×C×H×W ``.npy``
files, keyed by a manifest hash of the source files (path, byte size, mtime), so editing
or replacing any file rebuilds the cache. Writes go to a temporary folder that is renamed
into place, so an interrupted build never leaves a half cache behind.

Beside the arrays, ``content.sha256`` holds the content hash of what a model sees (ids and
decoded, resized pixels), computed once when the cache is built: identical data in another
folder or on another machine has the same content hash, where its manifest hash differs.

Benchmark: ``lesionbench bench`` (its loader section: cached vs uncached, full-size images).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lesionbench.data.decode import Size, hw, load_pair, size_label
from lesionbench.data.layouts import Sample
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_text, umask

CACHE_VERSION = 1
OWNER = "owner"  # "<host> <pid>" of the process building a temp folder
CONTENT = "content.sha256"  # the content hash of the cached arrays (content_hash)
STALE_AFTER_S = 30 * 60  # a temp folder from another host untouched this long is abandoned
log = logging.getLogger(__name__)


def manifest_hash(samples: list[Sample], extra: str = "") -> str:
    """Hash of ids, paths, byte sizes and mtimes of every image and mask (cheap: no reads)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}:{extra}".encode())
    for s in samples:
        for p in (s.image, *s.masks):
            st = p.stat()
            h.update(f"{s.id}|{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def content_hash(ids: list[str], pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> str:
    """Hash of the ids and each (image, mask) pair's shape and uint8 pixels: what a model sees,
    wherever the files live and whatever their modification times."""
    h = hashlib.sha256(f"content-v1:{json.dumps(ids)}".encode())
    for pair in pairs:
        for array in pair:
            array = np.ascontiguousarray(array, dtype=np.uint8)
            h.update(str(array.shape).encode())
            h.update(array.data)
    return h.hexdigest()[:16]


def cache_content(folder: Path) -> str:
    """The content hash stored with a cache when it was built; a cache built before hashes were
    stored is hashed now and the value stored (where the folder is writable)."""
    try:
        value = (Path(folder) / CONTENT).read_text().strip()
        if len(value) == 16 and all(c in "0123456789abcdef" for c in value):
            return value
    except OSError:
        pass
    arrays = _open(Path(folder))
    value = content_hash(arrays.ids, zip(arrays.images, arrays.masks, strict=True))
    try:
        atomic_write_text(Path(folder) / CONTENT, value)
    except OSError:  # a read-only shared cache: hashed again next time
        pass
    return value


@dataclass
class CachedArrays:
    images: np.ndarray  # N×H×W×3 uint8, memory-mapped
    masks: np.ndarray  # N×C×H×W uint8 in {0,1}, memory-mapped
    ids: list[str]
    path: Path


def _open(folder: Path) -> CachedArrays:
    ids = json.loads((folder / "ids.json").read_text())
    return CachedArrays(np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "masks.npy", mmap_mode="r"),
                        ids, folder)


def _open_valid(folder: Path, samples: list[Sample], size: Size, c: int) -> CachedArrays | None:
    """The cache in ``folder`` if every file parses and matches the samples; a corrupt one is removed."""
    if not (folder / "ids.json").is_file():
        return None
    n = len(samples)
    try:
        arrays = _open(folder)
        if (arrays.ids != [s.id for s in samples] or arrays.images.shape != (n, *hw(size), 3)
                or arrays.masks.shape != (n, c, *hw(size))):
            raise ValueError("ids or array shapes do not match the samples")
        return arrays
    except (OSError, ValueError, EOFError) as err:  # garbage, truncated .npy, bad JSON
        log.warning("%s: corrupt cache (%s); rebuilding it", folder, err)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def cache_bytes(n: int, c: int, size: Size) -> int:
    """Bytes a cache of n images (c mask channels) at ``size`` takes on disk (+ headers)."""
    h, w = hw(size)
    return n * h * w * (3 + c) + 4096


def clean_leftovers(cache_dir: Path) -> list[Path]:
    """Remove ``.<tag>-XXXX`` temp folders of builds that were killed: their owner process (same
    host) is gone, or they are older than STALE_AFTER_S (another host). Returns what was removed."""
    removed = []
    for tmp in Path(cache_dir).glob(".*-*"):
        try:
            if _abandoned(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
                removed.append(tmp)
        except FileNotFoundError:  # its builder renamed it into place while we looked: not a leftover
            continue
    return removed


def _abandoned(tmp: Path) -> bool:
    if not tmp.is_dir():
        return False
    try:
        host, _, pid = (tmp / OWNER).read_text().partition(" ")
        alive = host == socket.gethostname() and _pid_alive(int(pid))
        foreign = host != socket.gethostname()
    except (OSError, ValueError):  # no owner file yet (being made) or any more (being renamed): judge by age
        alive, foreign = False, True
    newest = max((p.stat().st_mtime for p in (tmp, *tmp.iterdir())), default=0.0)
    return not alive and (not foreign or time.time() - newest > STALE_AFTER_S)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _reserve(path: Path) -> None:
    """Allocate the memory map's blocks now: on a full disk this raises ENOSPC here instead of a
    SIGBUS ("Bus error") when a page of the sparse file is first written."""
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as fh:
            try:
                os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise
                # EOPNOTSUPP/EINVAL: the filesystem cannot preallocate; the free-space check stands


def _no_space(folder: Path, need: int) -> LesionBenchError:
    free = shutil.disk_usage(folder).free
    return LesionBenchError(f"{folder}: not enough disk space for the cache ({need / 1e6:.1f} MB needed, "
                            f"{free / 1e6:.1f} MB free); free some space or set $LESIONBENCH_WORKDIR to a larger disk")


def build_cache(samples: list[Sample], size: Size, threshold: int, cache_dir: Path, tag: str) -> CachedArrays:
    """Return the cache for these samples at this size, building it if absent, stale or corrupt."""
    key = manifest_hash(samples, f"{size if isinstance(size, int) else hw(size)}:{threshold}")
    folder = Path(cache_dir) / f"{tag}-{size_label(size)}-{key}"
    n, c = len(samples), len(samples[0].masks) if samples else 1
    arrays = _open_valid(folder, samples, size, c)
    if arrays is not None:
        return arrays
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(folder.parent)
        for old in folder.parent.glob(f"{tag}-{size_label(size)}-*"):  # stale versions of the same part
            if old != folder:  # the current one may have just been renamed into place by another process
                shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{tag}-", dir=folder.parent))
    except PermissionError as err:
        raise LesionBenchError(f"{folder.parent}: cannot write the cache there ({err.strerror}); set "
                               "$LESIONBENCH_WORKDIR to a writable folder") from None
    need = cache_bytes(n, c, size)
    try:
        tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700: a lab's shared cache follows the umask
        (tmp / OWNER).write_text(f"{socket.gethostname()} {os.getpid()}")
        if shutil.disk_usage(tmp).free < need:
            raise _no_space(folder.parent, need)
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, *hw(size), 3))
        masks = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (n, c, *hw(size)))
        _reserve(tmp / "images.npy")
        _reserve(tmp / "masks.npy")
        for i, s in enumerate(samples):
            images[i], masks[i] = load_pair(s, threshold, size)
        images.flush()
        masks.flush()
        ids = [s.id for s in samples]
        (tmp / CONTENT).write_text(content_hash(ids, zip(images, masks, strict=True)))
        del images, masks
        (tmp / "ids.json").write_text(json.dumps(ids))
        (tmp / OWNER).unlink()
        try:
            os.replace(tmp, folder)
        except OSError:  # another process (e.g. a DDP rank) finished the same cache first
            if not (folder / "ids.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _no_space(folder.parent, need) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _open(folder)

