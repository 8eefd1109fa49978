"""Predict masks for images of any size with a trained run, plus the overlay drawings.

Why resize twice: the network sees exactly what it saw at test time (the run's eval
transform at ``image_size``), and the probability map goes back to the original size so the
mask lines up with the user's image, the way the test metrics are computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from lesionbench.config import ExperimentConfig
from lesionbench.data.decode import load_image
from lesionbench.errors import LesionBenchError
from lesionbench.inference.load import class_names, eval_transform, load_run

#: One colour per output channel (lesion red; Task 2 attributes in distinct hues).
COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180]], np.uint8)
FP_COLOUR, FN_COLOUR, TP_COLOUR = (255, 0, 255), (0, 200, 255), (90, 90, 90)


def final_logits(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Deeply supervised outputs are lists (coarsest first): the finest head is the prediction."""
    return out[-1] if isinstance(out, (list, tuple)) else out


@torch.no_grad()
def predict_array(model: nn.Module, cfg: ExperimentConfig, image: np.ndarray, tta: bool = False) -> np.ndarray:
    """Probabilities C×H0×W0 (float32 in [0, 1]) for an RGB uint8 H0×W0×3 image.

    ``tta``: average the logits of the image and of its horizontal and vertical flips.
    """
    x = eval_transform(cfg)(image=image)["image"].unsqueeze(0).float()
    x = x.to(next(model.parameters()).device)
    logits = final_logits(model(x))
    if tta:  # a flip is its own inverse: flip in, predict, flip back, average the logits
        flipped = [final_logits(model(x.flip(d))).flip(d) for d in (3, 2)]
        logits = torch.stack([logits, *flipped]).mean(0)
    # logits (not probabilities) are resized, exactly as the test metrics do it
    up = F.interpolate(logits.float(), size=image.shape[:2], mode="bilinear", align_corners=False)
    return up[0].sigmoid().cpu().numpy()


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB image with each mask channel (C×H×W, bool) tinted in its colour and outlined."""
    from scipy.ndimage import binary_erosion
    out = image.astype(np.float32).copy()
    for c, m in enumerate(np.asarray(masks, bool)):
        colour = COLOURS[c % len(COLOURS)].astype(np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * colour
        edge = m & ~binary_erosion(m, iterations=max(1, min(m.shape) // 128))
        out[edge] = colour
    return out.clip(0, 255).astype(np.uint8)


def error_map(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """RGB H×W: false positives magenta, false negatives cyan, true positives grey, rest black."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    out = np.zeros((*pred.shape, 3), np.uint8)
    out[pred & target] = TP_COLOUR
    out[pred & ~target] = FP_COLOUR
    out[~pred & target] = FN_COLOUR
    return out


def save_png(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")
    return path


def predict_files(run_dir: str | Path, images: Sequence[str | Path], out: str | Path, tta: bool = False,
                  threshold: float = 0.5) -> list[Path]:
    """Write ``<stem>_mask.png`` (0/255; ``<stem>_<class>_mask.png`` per class when multi-label)
    and ``<stem>_overlay.png`` for every image; returns the written paths."""
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise LesionBenchError(f"{missing[0]}: no such image file ({len(missing)} missing)")
    task, cfg = load_run(run_dir)
    names = class_names(cfg)
    out = Path(out)
    written: list[Path] = []
    for path in map(Path, images):
        image = load_image(path)
        masks = predict_array(task.model, cfg, image, tta) > threshold
        if len(names) == 1:
            written.append(save_png(masks[0].astype(np.uint8) * 255, out / f"{path.stem}_mask.png"))
        else:
            for name, m in zip(names, masks):
                written.append(save_png(m.astype(np.uint8) * 255, out / f"{path.stem}_{name}_mask.png"))
        written.append(save_png(overlay(image, masks), out / f"{path.stem}_overlay.png"))
    return written
