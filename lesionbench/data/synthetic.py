"""Synthetic replicas of every official archive layout (the embedded default dataset).

Why: tests, demos and CI need data with the exact folder and file names of the official
archives (so the same loader code runs), without any download. Content is a pure function
of (seed, ISIC number), so an id shared by two editions has identical bytes, as the real
2016/2017 images that reappear in 2018 do; the leakage check has something to find.
"""

from __future__ import annotations

import fcntl
import json
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from lesionbench.data.layouts import LAYOUTS, TASK2_ATTRIBUTES
from lesionbench.data.render import render_polyp, render_skin
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_text, is_disk_full, refused_write
from lesionbench.settings import settings

VERSION = 3
MARKER = ".lesionbench-synthetic.json"
DEFAULT_COUNTS: dict[str, dict[str, int]] = {
    "isic2016": {"train": 120, "test": 40},
    "isic2017": {"train": 120, "val": 30, "test": 40},
    "isic2018": {"train": 120, "val": 30, "test": 40},
    "kvasir-seg": {"all": 160},
}
# First ISIC number of each split; 2017 train overlaps 2016 train, and 2018 train holds ten
# 2016 test and ten 2017 test images, mimicking the real cross-edition reuse (the real 2018
# training set holds most 2016/2017 images). The shared ids come first in sorted order, so even
# a `--quick` subset (the first ids of each split) holds some: the generalisation suite must
# find and exclude them.
_ID_BASE = {("isic2016", "train"): 0, ("isic2016", "test"): 5000, ("isic2017", "val"): 8000,
            ("isic2017", "test"): 9000, ("isic2018", "val"): 15000, ("isic2018", "test"): 16000}
REUSED = 10  # at most this many 2016 test (half of them) and 2017 test images found again in 2018 train


def default_root() -> Path:
    """$LESIONBENCH_SYNTHETIC, else ./data/synthetic."""
    return settings().synthetic_root()


def _ids(dataset: str, split: str, counts: dict[str, dict[str, int]]) -> list[int]:
    n = counts[dataset][split]
    if (dataset, split) in _ID_BASE:
        return list(range(_ID_BASE[(dataset, split)], _ID_BASE[(dataset, split)] + n))
    if dataset == "isic2017":  # train: second half of 2016 train, then new ids
        start = counts["isic2016"]["train"] // 2 if "isic2016" in counts else 2000
        return list(range(start, start + n))
    reused = list(range(5000, 5000 + min(REUSED, counts.get("isic2016", {}).get("test", 0) // 2, n)))
    reused += list(range(9000, 9000 + min(REUSED, counts.get("isic2017", {}).get("test", 0), n - len(reused))))
    return reused + list(range(12000, 12000 + n - len(reused)))


def _size(rng: np.random.Generator, size: tuple[int, int] | None, full: bool) -> tuple[int, int]:
    if full:
        return int(rng.integers(1400, 1600)), int(rng.integers(1900, 2100))
    lo, hi = size or (180, 320)
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))


def _save_mask(m: np.ndarray, path: Path) -> None:
    Image.fromarray(m.astype(np.uint8) * 255).save(path, optimize=False)


class _Writer:
    """Renders each ISIC number once per call, so shared ids are not rendered twice."""

    def __init__(self, out: Path, seed: int, size: tuple[int, int] | None, full: bool) -> None:
        self.out, self.seed, self.size, self.full = out, seed, size, full
        self._memo: dict[int, tuple[bytes, np.ndarray, dict[str, np.ndarray]]] = {}

    def skin(self, num: int) -> tuple[bytes, np.ndarray, dict[str, np.ndarray]]:
        if num not in self._memo:
            rng = np.random.default_rng([self.seed, num])
            img, mask, attrs = render_skin(rng, *_size(rng, self.size, self.full))
            path = self.out / ".tmp.jpg"
            img.save(path, quality=92)
            self._memo[num] = (path.read_bytes(), mask, attrs)
            path.unlink()
        return self._memo[num]

    def isic(self, dataset: str, counts: dict[str, dict[str, int]]) -> None:
        layout, root = LAYOUTS[dataset], self.out / dataset
        for split, spec in layout.splits.items():
            img_dir, mask_dir = root / spec.image_dirs[0], root / spec.mask_dirs[0]
            img_dir.mkdir(parents=True, exist_ok=True)
            mask_dir.mkdir(parents=True, exist_ok=True)
            t2 = root / LAYOUTS["isic2018-task2"].splits[split].mask_dirs[0] if dataset == "isic2018" else None
            meta = ["image_id,age_approximate,sex"]
            for num in _ids(dataset, split, counts):
                iid = f"ISIC_{num:07d}"
                data, mask, attrs = self.skin(num)
                (img_dir / f"{iid}.jpg").write_bytes(data)
                _save_mask(mask, mask_dir / f"{iid}{layout.mask_suffixes[0]}.png")
                if t2 is not None:
                    t2.mkdir(exist_ok=True)
                    for a in TASK2_ATTRIBUTES:
                        _save_mask(attrs[a], t2 / f"{iid}_attribute_{a}.png")
                if dataset == "isic2017":  # superpixel label map, encoded in RGB as the real ones
                    h, w = mask.shape
                    lab = (np.arange(h)[:, None] // 16) * 1000 + np.arange(w)[None, :] // 16
                    rgb = np.stack([lab & 255, (lab >> 8) & 255, (lab >> 16) & 255], -1).astype(np.uint8)
                    Image.fromarray(rgb).save(img_dir / f"{iid}_superpixels.png", compress_level=1)
                    meta.append(f"{iid},{int(num % 60 + 20)},{'male' if num % 2 else 'female'}")
            if dataset == "isic2017":
                (img_dir / f"{spec.image_dirs[0]}_metadata.csv").write_text("\n".join(meta) + "\n")
            if dataset == "isic2018":
                (img_dir / "LICENSE.txt").write_text("CC-BY-NC (synthetic replica)\n")
                (img_dir / "ATTRIBUTION.txt").write_text("LesionBench synthetic replica\n")
        junk = root / "__MACOSX" / layout.splits["train"].image_dirs[0]
        junk.mkdir(parents=True, exist_ok=True)
        (junk / "._ISIC_0000000.jpg").write_bytes(b"\x00\x05\x16\x07junk")
        (root / layout.splits["train"].image_dirs[0] / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")

    def kvasir(self, n: int) -> None:
        base = self.out / "kvasir-seg" / "Kvasir-SEG"
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "masks").mkdir(parents=True, exist_ok=True)
        boxes = {}
        alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
        for i in range(n):
            rng = np.random.default_rng([self.seed, 777, i])
            kid = "cju" + "".join(rng.choice(alphabet, 22))
            h, w = _size(rng, self.size, self.full)
            img, mask = render_polyp(rng, h, w)
            img.save(base / "images" / f"{kid}.jpg", quality=92)
            Image.fromarray(mask.astype(np.uint8) * 255).save(base / "masks" / f"{kid}.jpg", quality=90)
            ys, xs = np.nonzero(mask)
            bb = [{"label": "polyp", "xmin": int(xs.min()), "ymin": int(ys.min()),
                   "xmax": int(xs.max()), "ymax": int(ys.max())}] if len(ys) else []
            boxes[kid] = {"height": h, "width": w, "bbox": bb}
        (base / "kavsir_bboxes.json").write_text(json.dumps(boxes, indent=1))
        (base.parent / "__MACOSX").mkdir(exist_ok=True)
        (base / "images" / "._junk.jpg").write_bytes(b"\x00\x05\x16\x07")


def write_all(out: str | Path, seed: int = 0, counts: dict[str, dict[str, int]] | int | None = None,
              size: tuple[int, int] | None = None, full_size: bool = False,
              datasets: tuple[str, ...] | None = None) -> Path:
    """Write the replicas under ``out/<dataset>/``; ``counts`` is per dataset and split (an int: every split).

    A folder that refuses the files (read-only, a file in the way) or a full disk is one line naming
    ``out`` (``LesionBenchError``)."""
    out = Path(out)
    try:
        return _write_all(out, seed, counts, size, full_size, datasets)
    except OSError as err:
        raise _cannot_write(out, err, "choose a writable folder (lesionbench data synth --out FOLDER, or "
                            "$LESIONBENCH_SYNTHETIC / dataset.root for runs)") from None


def _cannot_write(out: Path, err: OSError, fix: str) -> LesionBenchError:
    """One line: the folder, why, the fix (a full disk: the folder and the space free)."""
    if is_disk_full(err):
        return refused_write(err) or LesionBenchError(f"{out}: no space left on the device")
    return LesionBenchError(f"{out}: cannot write the synthetic replica there ({err.strerror or type(err).__name__}); "
                            f"{fix}")


def _write_all(out: Path, seed: int, counts: dict[str, dict[str, int]] | int | None, size: tuple[int, int] | None,
               full_size: bool, datasets: tuple[str, ...] | None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(counts, int):
        counts = {d: {s: counts for s in c} for d, c in DEFAULT_COUNTS.items()}
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    datasets = datasets or tuple(DEFAULT_COUNTS)
    t0, writer = time.perf_counter(), _Writer(out, seed, size, full_size)
    for d in datasets:
        writer.kvasir(counts[d]["all"]) if d == "kvasir-seg" else writer.isic(d, counts)
    info = {"version": VERSION, "seed": seed, "counts": counts, "size": size, "full_size": full_size,
            "datasets": list(datasets), "seconds": round(time.perf_counter() - t0, 2)}
    atomic_write_text(out / MARKER, json.dumps(info, indent=1))  # written last: the replica is complete
    return out


def ensure(root: Path | str | None = None, seed: int = 0) -> Path:
    """Write the default replicas under ``root`` unless a complete set is already there (any seed,
    counts or size: a replica someone wrote on purpose, e.g. with ``lesionbench data synth``, is kept).

    Processes started together (``--workers``, a SLURM array, two shells) take a lock: one writes,
    the others wait and then find the marker, so nobody reads an image while it is being written."""
    root = Path(root) if root else default_root()
    if _complete(root):
        return root
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _locked(root / ".lesionbench-synthetic.lock"):
            return root if _complete(root) else write_all(root, seed=seed)
    except OSError as err:  # read-only, a file in the way, a full disk
        raise _cannot_write(root, err, "set $LESIONBENCH_SYNTHETIC (or dataset.root) to a writable folder") from None


def _complete(root: Path) -> bool:
    try:
        info = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):  # absent, or garbage left by an old non-atomic write: write again
        return False
    return info.get("version") == VERSION and len(info.get("datasets", [])) == len(DEFAULT_COUNTS)


@contextmanager
def _locked(path: Path):
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, also if the process dies
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
