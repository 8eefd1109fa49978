"""Decoding and resizing of one sample; shared by the cache and the uncached path.

Why one function: cached and uncached runs must see identical pixels, so both call
``load_pair``. JPEG draft mode lets libjpeg decode large images at 1/2..1/8 scale directly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lesionbench.data.layouts import Sample
from lesionbench.errors import LesionBenchError

#: A network input size: S (S×S) or (H, W), as ``dataset.image_size`` gives it.
Size = int | tuple[int, int]


def hw(size: Size) -> tuple[int, int]:
    """(H, W) of a size given as S (square) or (H, W)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def size_label(size: Size) -> str:
    """``224px`` or ``767x1022px`` (H×W): for folder names and tables."""
    h, w = hw(size)
    return f"{h}px" if h == w else f"{h}x{w}px"


def open_image(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        return img
    except (UnidentifiedImageError, OSError) as err:
        raise LesionBenchError(f"{path}: cannot be read as an image ({err}); re-extract the archive "
                               "or run `lesionbench data verify`") from None


def load_image(path: Path, size: Size | None = None) -> np.ndarray:
    """RGB uint8 H×W×3 (grayscale/RGBA/palette converted), resized to ``size`` when given."""
    img = open_image(path)
    try:
        if size is not None and img.format == "JPEG":
            h, w = hw(size)
            img.draft("RGB", (w * 2, h * 2))  # keeps >= 2x the target, so quality is unchanged
        return resize_rgb(img.convert("RGB"), size)
    except OSError as err:
        raise LesionBenchError(f"{path}: corrupt or truncated image ({err}); run `lesionbench data verify`") from None


def resize_rgb(img: Image.Image | np.ndarray, size: Size | None) -> np.ndarray:
    """The one image resize (PIL bilinear, antialiased): the cache, predict, explain and export use it."""
    img = Image.fromarray(np.ascontiguousarray(img)) if isinstance(img, np.ndarray) else img
    if size is not None and img.size != hw(size)[::-1]:
        img = img.resize(hw(size)[::-1], Image.BILINEAR, reducing_gap=2.0)
    return np.asarray(img)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file as ``load_image(path)`` decodes it, read from the header only."""
    w, h = open_image(path).size
    return h, w


def load_mask(path: Path, threshold: int, size: Size | None = None) -> np.ndarray:
    """Binary uint8 H×W in {0,1}: value > threshold. Resizing goes through a smooth
    (bilinear) downscale of the 0/255 mask then re-thresholds, which avoids nearest aliasing."""
    img = open_image(path)
    try:
        arr = np.asarray(img.convert("L"))
    except OSError as err:
        raise LesionBenchError(f"{path}: corrupt or truncated mask ({err}); run `lesionbench data verify`") from None
    binary = arr > threshold
    if size is None or binary.shape == hw(size):
        return binary.astype(np.uint8)
    small = Image.fromarray(binary.astype(np.uint8) * 255).resize(hw(size)[::-1], Image.BILINEAR, reducing_gap=2.0)
    return (np.asarray(small) > 127).astype(np.uint8)


def load_pair(sample: Sample, threshold: int, size: Size | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image H×W×3 uint8, mask C×H×W uint8 in {0,1}); size=None keeps the original size."""
    image = load_image(sample.image, size)
    masks = np.stack([load_mask(p, threshold, size) for p in sample.masks])
    if size is None and masks.shape[1:] != image.shape[:2]:
        raise LesionBenchError(f"{sample.masks[0]}: mask is {masks.shape[2]}x{masks.shape[1]} but image "
                               f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}; run `lesionbench data verify`")
    return image, masks
