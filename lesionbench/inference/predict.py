"""Predict masks for images of any size with a trained run, plus the overlay drawings.

Why resize twice: the network sees exactly the tensor the test loop fed it (``model_input``:
the cache's decode and resize, then the eval normalisation), and the logits go back to the
original size with the test loop's own resize, so a mask scores what ``per_image.csv`` says.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from lesionbench.config import ExperimentConfig
from lesionbench.data.decode import load_image
from lesionbench.data.preprocess import eval_tensor, model_input
from lesionbench.errors import LesionBenchError
from lesionbench.inference.load import class_names, load_run, run_stats
from lesionbench.inference.outputs import OutputFormat, plan
from lesionbench.metrics.scores import resize_logits_to

#: One colour per output channel (lesion red; Task 2 attributes in distinct hues).
COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180]], np.uint8)
FP_COLOUR, FN_COLOUR, TP_COLOUR = (255, 0, 255), (0, 200, 255), (90, 90, 90)


def final_logits(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """Deeply supervised outputs are lists (coarsest first): the finest head is the prediction."""
    return out[-1] if isinstance(out, (list, tuple)) else out


def probabilities(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """C×H×W probabilities at the original size: logits are resized (never thresholded masks),
    with the very function the test loop uses before it scores against the ground truth."""
    return resize_logits_to(logits.float(), size)[0].sigmoid().cpu().numpy()


@torch.no_grad()
def predict_tensor(model: nn.Module, x: torch.Tensor, size: tuple[int, int], tta: bool = False) -> np.ndarray:
    """Probabilities C×H×W (float32 in [0, 1]) for a 3×S×S network input (``model_input``).

    ``tta``: average the logits of the image and of its horizontal and vertical flips.
    """
    x = x.unsqueeze(0).float().to(next(model.parameters()).device)
    logits = final_logits(model(x))
    if tta:  # a flip is its own inverse: flip in, predict, flip back, average the logits
        flipped = [final_logits(model(x.flip(d))).flip(d) for d in (3, 2)]
        logits = torch.stack([logits, *flipped]).mean(0)
    return probabilities(logits, size)


def predict_array(model: nn.Module, cfg: ExperimentConfig, image: np.ndarray, tta: bool = False) -> np.ndarray:
    """Probabilities C×H0×W0 for an RGB uint8 H0×W0×3 array, resized as the cache resizes.
    For a file prefer ``predict_path``: it also decodes JPEGs exactly as the cache does."""
    x = eval_tensor(image, cfg.dataset.image_size, cfg.dataset.augmentation, run_stats(model))
    return predict_tensor(model, x, image.shape[:2], tta)


def predict_path(model: nn.Module, cfg: ExperimentConfig, path: str | Path, tta: bool = False) -> np.ndarray:
    """Probabilities C×H0×W0 for an image file, from the same tensor the test loop scored."""
    x, size = model_input(path, cfg.dataset.image_size, cfg.dataset.augmentation, run_stats(model))
    return predict_tensor(model, x, size, tta)


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
    """Write a PNG; a folder that cannot be written is one line naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")
    except OSError as err:
        raise LesionBenchError(f"{path}: cannot write ({err.strerror or err}); choose a writable --out") from None
    return path


def predict_files(run_dir: str | Path, images: Sequence[str | Path], out: str | Path, tta: bool = False,
                  threshold: float = 0.5, fmt: OutputFormat = "lesionbench", overlays: str | Path | None = None,
                  overwrite: bool = False) -> list[Path]:
    """Write masks (0/255, single channel, each image's original size) and overlays; return the paths.

    ``fmt="lesionbench"``: ``<stem>_mask.png`` (``<stem>_<class>_mask.png`` per class) and
    ``<stem>_overlay.png`` in ``out`` (or in ``overlays``). ``fmt="isic"``: only the challenge's
    mask files in ``out``; overlays only when ``overlays`` names another folder.
    """
    missing = [str(p) for p in images if not Path(p).is_file()]
    if missing:
        raise LesionBenchError(f"{missing[0]}: no such image file ({len(missing)} missing)")
    task, cfg = load_run(run_dir)
    names = class_names(cfg)
    out = Path(out)
    targets = plan([Path(p) for p in images], names, cfg.dataset.name, out, fmt,
                   Path(overlays) if overlays is not None else None, overwrite)
    written: list[Path] = []
    for path, (mask_paths, overlay_path) in zip(map(Path, images), targets, strict=False):
        masks = predict_path(task.model, cfg, path, tta) > threshold
        for m, target in zip(masks, mask_paths, strict=False):
            written.append(save_png(m.astype(np.uint8) * 255, target))
        if overlay_path is not None:
            written.append(save_png(overlay(load_image(path), masks), overlay_path))
    return written
