"""Per-channel mean/std of a training split, for ``dataset.normalize: dataset`` (paper 003).

Why: paper 003 normalises with "mean/std from ISIC data", not ImageNet's. The statistics come
from the training images only (never val/test), at the cached training size, and are stored
beside the cache keyed by the same manifest hash, so they are computed once per set of files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lesionbench.data.cache import build_cache, manifest_hash
from lesionbench.data.decode import Size, hw
from lesionbench.data.layouts import Sample
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_text

Stats = tuple[tuple[float, float, float], tuple[float, float, float]]


def channel_stats(images: np.ndarray, chunk: int = 64) -> Stats:
    """(mean, std) per RGB channel in [0, 1] units over N×H×W×3 uint8 images (float64 sums)."""
    if len(images) == 0:
        raise LesionBenchError("dataset.normalize: dataset needs at least one training image")
    total, sq, count = np.zeros(3), np.zeros(3), 0
    for i in range(0, len(images), chunk):
        x = np.asarray(images[i:i + chunk], dtype=np.float64).reshape(-1, 3) / 255.0
        total += x.sum(0)
        sq += (x * x).sum(0)
        count += len(x)
    mean = total / count
    std = np.sqrt(np.maximum(sq / count - mean**2, 1e-12))
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)  # type: ignore[return-value]


def training_stats(samples: list[Sample], size: Size, threshold: int, cache_dir: Path, tag: str) -> Stats:
    """Mean/std of these (training) samples at ``size``, read from ``<cache_dir>/<tag>-stats-<key>.json``
    or computed from the pre-resized cache and written there."""
    key = manifest_hash(samples, f"stats:{size if isinstance(size, int) else hw(size)}")
    path = Path(cache_dir) / f"{tag}-stats-{key}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            return tuple(data["mean"]), tuple(data["std"])  # type: ignore[return-value]
        except (ValueError, KeyError, TypeError):
            pass  # corrupt: compute again
    arrays = build_cache(samples, size, threshold, cache_dir, tag)
    mean, std = channel_stats(arrays.images)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"mean": mean, "std": std, "images": len(samples), "size": size if isinstance(size, int) else list(hw(size))}))
    return mean, std
