"""What the test loop leaves in the run folder beside its numbers: every prediction as a mask file,
and the few images the visual report draws.

Why files: the visual report (reporting/visual.py) and anyone checking a score read them; nobody
has to load the model or rebuild the dataset again, and a run folder copied to another machine
still shows what the model did.

- ``predictions/``: each test image's predicted masks at the image's original size, 0/255 PNG,
  named as the ISIC challenges name a submission (``<id>_segmentation.png``; Task 2
  ``<id>_attribute_<name>.png``), so ``lesionbench score <truth> <run>/predictions`` re-scores
  exactly what ``per_image.csv`` says. These are the very masks the test loop scored.
- ``report/inputs/``: for the images the report shows (the first ``MAX_GRID`` test images and the
  ``N_EXTREMES`` best and worst by Dice), the image (JPEG) and its ground truth (PNG), longest side
  at most ``THUMB`` px, plus ``samples.json`` naming them with their scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from PIL import Image

from lesionbench.data.decode import load_pair
from lesionbench.data.drawing import EXTREMES, GRID, THUMB, thumbnail
from lesionbench.io import atomic_write_text
from lesionbench.metrics.scores import per_image_metrics
from lesionbench.runfolder import INPUTS, PREDICTIONS, SAMPLES, mask_files

__all__ = ["INPUTS", "MAX_GRID", "N_EXTREMES", "PREDICTIONS", "SAMPLES", "THUMB", "SaveTestOutputs", "mask_files",
           "thumbnail"]  # the saved-output names live in the run-folder contract; re-exported for old callers
MAX_GRID, N_EXTREMES = GRID, EXTREMES


def _png(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255).save(path, format="PNG")


class SaveTestOutputs(Callback):
    """Writes ``predictions/`` batch by batch during the test, then ``report/inputs/`` once the
    per-image scores are known (rank zero; each rank writes the predictions of its own images)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        (self.run_dir / PREDICTIONS).mkdir(parents=True, exist_ok=True)

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        dm = trainer.datamodule
        ids, names = dm.test_ids, dm.class_names
        for index, masks in zip(batch["index"].tolist(), outputs["pred"], strict=True):
            for mask, name in zip(masks.numpy(), mask_files(ids[index], names), strict=True):
                _png(mask, self.run_dir / PREDICTIONS / name)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or pl_module.test_result is None:
            return
        dm = trainer.datamodule
        index, stats = pl_module.test_result
        samples = dm.parts["test"]
        dice = per_image_metrics(stats)["dice"].mean(-1)  # mean over channels, as per_image.csv
        scores = {samples[i].id: float(d) for i, d in zip(index.reshape(-1).tolist(), dice.tolist(), strict=True)}
        order = sorted(scores, key=scores.__getitem__)
        n = min(N_EXTREMES, len(order) // 2 or 1)
        picked = {"grid": [s.id for s in samples[:MAX_GRID]], "best": order[::-1][:n], "worst": order[:n]}
        folder = self.run_dir / INPUTS
        (folder / "truth").mkdir(parents=True, exist_ok=True)
        by_id = {s.id: s for s in samples}
        for sid in dict.fromkeys(picked["grid"] + picked["best"] + picked["worst"]):
            image, truth = load_pair(by_id[sid], dm.layout.mask_threshold)  # original size, as scored
            thumbnail(image, Image.Resampling.BILINEAR).save(folder / f"{sid}.jpg", quality=90)
            for mask, name in zip(truth, mask_files(sid, dm.class_names), strict=True):
                _png(np.asarray(thumbnail(mask.astype(np.uint8) * 255, Image.Resampling.NEAREST)) > 127,
                     folder / "truth" / name)
        atomic_write_text(folder / SAMPLES, json.dumps({
            **picked, "metric": "dice", "scores": {k: scores[k] for k in dict.fromkeys(
                picked["grid"] + picked["best"] + picked["worst"])}, "class_names": list(dm.class_names)}, indent=1))

