"""Train/eval leakage: the same image in a training set and an evaluation set.

Why: ISIC 2016/2017 images reappear in ISIC 2018 (same ISIC id, usually identical bytes),
and the archives hold a few byte-identical duplicates under different ids. Training on one
edition and testing on another silently inflates scores unless this is checked.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from lesionbench.data.layouts import Sample


@dataclass(frozen=True)
class Leak:
    train_id: str
    eval_id: str
    reason: str  # "id" (same ISIC id) or "bytes" (identical image file)
    train_path: Path
    eval_path: Path

    def __str__(self) -> str:
        return f"{self.train_path} == {self.eval_path} (same {self.reason})"


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def find_leaks(train_samples: list[Sample], eval_samples: list[Sample]) -> list[Leak]:
    """Pairs sharing an id or identical image bytes. Only files whose byte size occurs on both
    sides are hashed, so the check reads almost nothing on a clean split."""
    leaks: dict[tuple[str, str], Leak] = {}
    by_id = {s.id: s for s in train_samples}
    for e in eval_samples:
        if e.id in by_id:
            t = by_id[e.id]
            leaks[(t.id, e.id)] = Leak(t.id, e.id, "id", t.image, e.image)
    train_sizes: dict[int, list[Sample]] = defaultdict(list)
    for t in train_samples:
        train_sizes[t.image.stat().st_size].append(t)
    digests: dict[Path, str] = {}
    for e in eval_samples:
        for t in train_sizes.get(e.image.stat().st_size, []):
            if (t.id, e.id) in leaks:
                continue
            for p in (t.image, e.image):
                if p not in digests:
                    digests[p] = _digest(p)
            if digests[t.image] == digests[e.image]:
                leaks[(t.id, e.id)] = Leak(t.id, e.id, "bytes", t.image, e.image)
    return list(leaks.values())


def describe(leaks: list[Leak], context: str, limit: int = 3) -> str:
    """One line for a warning or a log."""
    examples = "; ".join(str(x) for x in leaks[:limit])
    return (f"{context}: {len(leaks)} training image(s) also in evaluation, e.g. {examples} "
            "(set dataset.leakage: exclude to drop them from training)")
