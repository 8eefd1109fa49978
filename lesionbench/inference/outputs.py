"""Where ``predict`` writes: file names per format, checked before anything is written.

Why a plan first: two inputs with one file name (``a/x.jpg``, ``b/x.png``) must not overwrite
each other, and an existing file is never replaced without ``--overwrite``; both are refused
with one line before the first mask is written, so a refused call leaves ``--out`` untouched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from lesionbench.errors import LesionBenchError
from lesionbench.runfolder import mask_files

OutputFormat = Literal["lesionbench", "isic"]
FORMATS: tuple[str, ...] = ("lesionbench", "isic")
#: Datasets whose challenge accepts ``--format isic`` (synthetic replicates the ISIC 2018 layout).
ISIC_DATASETS = ("isic2016", "isic2017", "isic2018", "isic2018-task2", "synthetic")
#: What the ISIC scorer accepts as an image id (ISIC_0012345).
ISIC_ID = re.compile(r"^ISIC_\d{7}$")


def mask_names(stem: str, names: Sequence[str], fmt: OutputFormat) -> list[str]:
    """One file name per output channel.

    ``isic``: ``<id>_segmentation.png`` (ISIC 2016/2017/2018 Task 1) or ``<id>_attribute_<name>.png``
    (2018 Task 2, the challenge's attribute spelling); ``lesionbench``: ``<stem>[_<class>]_mask.png``.
    """
    if fmt == "isic":
        return mask_files(stem, names)  # the names the test loop gives <run>/predictions/ too
    return [f"{stem}_mask.png"] if len(names) == 1 else [f"{stem}_{n}_mask.png" for n in names]


def plan(images: Sequence[Path], names: Sequence[str], dataset: str, out: Path, fmt: OutputFormat,
         overlays: Path | None, overwrite: bool) -> list[tuple[list[Path], Path | None]]:
    """(mask paths, overlay path or None) per input image, after every refusal check."""
    if fmt not in FORMATS:
        raise LesionBenchError(f"--format {fmt!r}: unknown (known: {', '.join(FORMATS)})")
    if fmt == "isic" and dataset not in ISIC_DATASETS:
        raise LesionBenchError(f"--format isic: the run was trained on {dataset}, not an ISIC challenge dataset; "
                               "use --format lesionbench")
    strangers = [i.name for i in images if not ISIC_ID.match(Path(i).stem)] if fmt == "isic" else []
    if strangers:
        raise LesionBenchError(f"--format isic: {len(strangers)} input(s) not named as ISIC images (ISIC_ and 7 "
                               f"digits), e.g. {', '.join(strangers[:3])}: the challenge rejects such masks; rename "
                               "them to their ISIC ids or use --format lesionbench")
    if fmt == "isic" and overlays is not None and Path(overlays).resolve() == Path(out).resolve():
        raise LesionBenchError(f"--overlays {overlays}: must differ from --out (the ISIC scorer accepts only masks "
                               "in the submission folder)")
    overlay_dir = overlays if overlays is not None else (out if fmt == "lesionbench" else None)
    owner: dict[Path, Path] = {}
    result = []
    for image in images:
        masks = [out / n for n in mask_names(image.stem, names, fmt)]
        over = overlay_dir / f"{image.stem}_overlay.png" if overlay_dir is not None else None
        for target in [*masks, *([over] if over else [])]:
            key = target.resolve()
            if key in owner:
                raise LesionBenchError(f"{owner[key]} and {image} would both write {target}; rename one, "
                                       "or predict them into separate --out folders")
            owner[key] = image
            if target.exists() and not overwrite:
                raise LesionBenchError(f"{target}: already exists; pass --overwrite to replace it, "
                                       "or choose another --out")
        result.append((masks, over))
    return result
