"""Decode once, resize once, memory-map after that.

Why: decoding 2000×1500 JPEGs every epoch dominates small-model training. Each
(dataset, part, size) is stored as uint8 ``images`` N×H×W×3 and ``masks`` N×C×H×W ``.npy``
files, keyed by a manifest hash of the source files (path, byte size, mtime), so editing
or replacing any file rebuilds the cache. Writes go to a temporary folder that is renamed
into place, so an interrupted build never leaves a half cache behind.

Benchmark: ``lesionbench bench`` (its loader section: cached vs uncached, full-size images).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lesionbench.data.decode import load_pair
from lesionbench.data.layouts import Sample

CACHE_VERSION = 1


def manifest_hash(samples: list[Sample], extra: str = "") -> str:
    """Hash of ids, paths, byte sizes and mtimes of every image and mask (cheap: no reads)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}:{extra}".encode())
    for s in samples:
        for p in (s.image, *s.masks):
            st = p.stat()
            h.update(f"{s.id}|{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


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


def build_cache(samples: list[Sample], size: int, threshold: int, cache_dir: Path, tag: str) -> CachedArrays:
    """Return the cache for these samples at this size, building it if absent or stale."""
    key = manifest_hash(samples, f"{size}:{threshold}")
    folder = Path(cache_dir) / f"{tag}-{size}px-{key}"
    if (folder / "ids.json").is_file():
        return _open(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for old in folder.parent.glob(f"{tag}-{size}px-*"):  # stale versions of the same part
        shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{tag}-", dir=folder.parent))
    try:
        n, c = len(samples), len(samples[0].masks) if samples else 1
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, size, size, 3))
        masks = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (n, c, size, size))
        for i, s in enumerate(samples):
            images[i], masks[i] = load_pair(s, threshold, size)
        images.flush()
        masks.flush()
        del images, masks
        (tmp / "ids.json").write_text(json.dumps([s.id for s in samples]))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process (e.g. a DDP rank) finished the same cache first
            if not (folder / "ids.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _open(folder)

