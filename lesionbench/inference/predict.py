"""``lesionbench predict``: masks (and overlays) for images of any size, from any finished run.

Why through ``load_run``: a LesionBench network and an nnU-Net run predict behind one interface,
in the test loop's batches, so a mask scores what the run's ``per_image.csv`` says
(inference/network.py for the why of each step).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from lesionbench.data.decode import load_image
from lesionbench.data.drawing import overlay
from lesionbench.errors import LesionBenchError
from lesionbench.inference.load import load_run
from lesionbench.inference.network import chunks
from lesionbench.inference.outputs import OutputFormat, plan


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write a PNG; a folder that cannot be written is one line naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")
    except OSError as err:
        raise LesionBenchError(f"{path}: cannot write ({err.strerror or err}); choose a writable --out") from None
    return path


def predict_files(run_dir: str | Path, images: Sequence[str | Path], out: str | Path, tta: bool = False,
                  threshold: float | None = None, fmt: OutputFormat = "lesionbench",
                  overlays: str | Path | None = None, overwrite: bool = False) -> list[Path]:
    """Write masks (0/255, single channel, each image's original size) and overlays; return the paths.

    ``fmt="lesionbench"``: ``<stem>_mask.png`` (``<stem>_<class>_mask.png`` per class) and
    ``<stem>_overlay.png`` in ``out`` (or in ``overlays``). ``fmt="isic"``: only the challenge's
    mask files in ``out``; overlays only when ``overlays`` names another folder. ``threshold``:
    the run's own (0.5) unless given.
    """
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise LesionBenchError(f"{missing[0]}: no such image file ({len(missing)} missing)")
    run = load_run(run_dir)
    paths = [Path(p) for p in images]
    targets = plan(paths, run.class_names, run.cfg.dataset.name, Path(out), fmt,
                   Path(overlays) if overlays is not None else None, overwrite)
    written: list[Path] = []
    for batch in chunks(list(zip(paths, targets, strict=True)), run.batch_size):
        for (path, (mask_paths, overlay_path)), probs in zip(batch, run.predict([p for p, _ in batch], tta),
                                                             strict=True):
            masks = run.mask(probs) if threshold is None else run.predictor.postprocess(probs > threshold)
            for m, target in zip(masks, mask_paths, strict=True):
                written.append(save_png(m.astype(np.uint8) * 255, target))
            if overlay_path is not None:
                written.append(save_png(overlay(load_image(path), masks), overlay_path))
    return written
