"""Masks drawn over images: the colours, overlays and error maps of ``predict`` and the visual report.

Why here, low in the package: both the inference room (``predict`` writes overlays) and the
reporting room (the visual report draws the test loop's saved masks) draw masks the same way, and
neither may import the other's room; numpy and scipy are all this needs.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: The visual report's picks: the first GRID test images and the EXTREMES best and worst by Dice,
#: drawn as thumbnails of at most THUMB px on their longest side (the test loop saves them so).
GRID, EXTREMES, THUMB = 8, 3, 512

#: One colour per output channel (lesion red; Task 2 attributes in distinct hues).
COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180]], np.uint8)
FP_COLOUR, FN_COLOUR, TP_COLOUR = (255, 0, 255), (0, 200, 255), (90, 90, 90)


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


def thumbnail(array: np.ndarray, resample: Image.Resampling) -> Image.Image:
    """The image (or mask) at most THUMB px on its longest side."""
    image = Image.fromarray(array)
    scale = THUMB / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    return image
