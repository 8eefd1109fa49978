"""Integrity check of a dataset root, nnU-Net style: one line per fault, then a summary.

Checks counts against the official ones (a difference is a warning), pairing, mask values
(PNG masks must be binary; Kvasir's JPEG masks are exempt), image/mask sizes and files that
cannot be decoded. Missing split folders are warnings as long as one split is present, so a
user may verify only the archives they downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lesionbench.data.layouts import Layout, Sample, find_dir, get_layout, locate, pair_split


@dataclass
class VerifyReport:
    name: str
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts.items()) or "no split found"
        state = "OK" if self.ok else "FAILED"
        return f"{self.name} at {self.root}: {state} ({counts}; {len(self.errors)} error(s), {len(self.warnings)} warning(s))"

    def lines(self) -> list[str]:
        return [f"ERROR {e}" for e in self.errors] + [f"WARNING {w}" for w in self.warnings] + [self.summary()]


def _read(path: Path, report: VerifyReport, kind: str) -> tuple[Image.Image | None, tuple[int, int]]:
    """Fully decode a file; record an error naming the path when it cannot be read."""
    try:
        img = Image.open(path)
        size = img.size
        if kind == "image" and img.format == "JPEG":
            img.draft(img.mode, (max(1, size[0] // 4), max(1, size[1] // 4)))  # still reads every byte
        img.load()
        return img, size
    except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
        report.errors.append(f"{path}: unreadable {kind} ({type(err).__name__}: {err})")
        return None, (0, 0)


def pairing_errors(layout: Layout, root: Path, split: str, lone_images: list[Path],
                   lone_masks: list[Path]) -> list[str]:
    """One line per image without its mask(s) and per mask without its image (shared with ``run``)."""
    spec = layout.splits[split]
    img_dir, mask_dir = find_dir(root, spec.image_dirs), find_dir(root, spec.mask_dirs)
    lines = []
    for p in lone_images:
        expected = ", ".join(p.stem + s + layout.mask_exts[0] for s in layout.mask_suffixes)
        lines.append(f"{p}: image has no mask (expected {expected} in {mask_dir})")
    return lines + [f"{p}: mask has no image in {img_dir}" for p in lone_masks]


def check_sample(s: Sample, report: VerifyReport) -> None:
    """Decode one image and its masks; record unreadable files, size mismatches and non-binary masks.
    Shared with ``run`` (data/checks.py), so both fail with the same lines."""
    img, isize = _read(s.image, report, "image")
    for m in s.masks:
        mimg, msize = _read(m, report, "mask")
        if mimg is None:
            continue
        if img is not None and msize != isize:
            report.errors.append(f"{m}: mask is {msize[0]}x{msize[1]} but image {s.image.name} is "
                                 f"{isize[0]}x{isize[1]}")
        if m.suffix.lower() in (".jpg", ".jpeg"):
            continue  # lossy masks (Kvasir-SEG) are binarised at 127 when loaded
        values = np.unique(np.asarray(mimg.convert("L")))
        if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
            shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
            report.errors.append(f"{m}: mask is not binary (values {shown}; expected 0 and 255)")


def verify(name: str, root: str | Path) -> VerifyReport:
    """Check every split of ``name`` under ``root`` and return the report (never raises for faults)."""
    layout, root = get_layout(name), Path(root)
    root = locate(layout, root) or root
    report = VerifyReport(name, root)
    for split, spec in layout.splits.items():
        img_dir, mask_dir = find_dir(root, spec.image_dirs), find_dir(root, spec.mask_dirs)
        if img_dir is None or mask_dir is None:
            missing = [c[0] for c, d in ((spec.image_dirs, img_dir), (spec.mask_dirs, mask_dir)) if d is None]
            report.warnings.append(f"{root / missing[0]}: {split} folder(s) {', '.join(missing)} not found "
                                   f"(archive not downloaded? get it from {layout.source})")
            continue
        samples, lone_images, lone_masks = pair_split(layout, root, split)
        report.errors.extend(pairing_errors(layout, root, split, lone_images, lone_masks))
        report.counts[split] = len(samples)
        if len(samples) != spec.count:
            report.warnings.append(f"{img_dir}: {len(samples)} {split} pairs, the official archive has {spec.count}")
        for s in samples:
            check_sample(s, report)
    if not report.counts:  # a wrong root: one error, not a warning per missing folder
        first = next(iter(layout.splits.values()))
        report.warnings.clear()
        report.errors.append(f"{root}: no {name} split found (expected e.g. {first.image_dirs[0]}/ and "
                             f"{first.mask_dirs[0]}/; get them from {layout.source})")
    return report
