"""The ``data verify`` checks, run by training too: once per manifest, before the cache is built.

Why: a mask that ``verify`` rejects (antialiased values, another size than its image, an
unreadable file) would otherwise train silently (an antialiased mask thresholded at > 0
grows the lesion). Decoding every file is as costly as building the cache, so a passed check
is remembered in a marker named by the manifest hash (paths, sizes, mtimes): any change re-checks.
"""

from __future__ import annotations

from pathlib import Path

from lesionbench.data.cache import manifest_hash
from lesionbench.data.layouts import Layout, Sample, pair_split
from lesionbench.data.verify import VerifyReport, check_sample, pairing_errors
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_text


def check_pairs(layout: Layout, root: Path) -> None:
    """Unpaired files fail with verify's lines (cheap: folder listings only, so every time)."""
    report = VerifyReport(layout.name, Path(root))
    for split in layout.splits:
        samples, lone_images, lone_masks = pair_split(layout, root, split)
        report.errors.extend(pairing_errors(layout, root, split, lone_images, lone_masks))
        if samples:
            report.counts[split] = len(samples)
    _raise_if_failed(report)


def ensure_checked(samples: list[Sample], dataset: str, root: Path, marker_dir: Path, tag: str) -> None:
    """Raise with verify's own lines (``ERROR <file>: ...``, then its summary) when a sample fails."""
    if not samples:
        return
    marker = Path(marker_dir) / f"{tag}-{manifest_hash(samples, 'checked')}.ok"
    if marker.is_file():
        return
    report = VerifyReport(dataset, Path(root), counts={tag: len(samples)})
    for s in samples:
        check_sample(s, report)
    _raise_if_failed(report)
    try:
        for old in marker.parent.glob(f"{tag}-*.ok"):  # markers of earlier versions of these files
            old.unlink(missing_ok=True)
        atomic_write_text(marker, f"{len(samples)} samples passed the data verify checks\n")
    except OSError:  # an unwritable work folder only costs a re-check next time (the cache says why)
        pass


def _raise_if_failed(report: VerifyReport) -> None:
    if report.errors:
        lines = [f"ERROR {e}" for e in report.errors] + [report.summary()]
        raise LesionBenchError("\n".join(lines) + "\nfix or replace these files (`lesionbench data verify "
                               f"{report.name}` lists every fault), then run again")
