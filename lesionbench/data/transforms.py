"""Albumentations recipes, one per reproduced write-up, selected by name in config.

Why albumentations: one call transforms the image and every mask channel with the same
random parameters (masks use nearest-neighbour), so augmentation can never misalign them.
Every recipe ends with ImageNet normalisation and ToTensorV2 (mask -> C×H×W).
"""

from __future__ import annotations

from collections.abc import Callable

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from lesionbench.data.decode import Size, hw
from lesionbench.errors import LesionBenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_BORDER = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}


def _flips() -> list[A.BasicTransform]:
    return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]


def _paper000() -> list[A.BasicTransform]:
    """000 (FCT notebook): joint flips and rotation, brightness/contrast on the image."""
    return [*_flips(), A.Rotate(limit=30, p=0.5, **_BORDER), A.RandomBrightnessContrast(0.2, 0.2, p=0.5)]


def _paper001() -> list[A.BasicTransform]:
    """001 (MobileNet U-Net, ISIC 2016): flips p=0.5 and random brightness/contrast."""
    return [*_flips(), A.RandomBrightnessContrast(0.2, 0.2, p=0.5)]


def _paper002() -> list[A.BasicTransform]:
    """002 (Kvasir-SEG): spatial flips, ±20° rotation, affine, elastic; photometric with p=0.8."""
    return [
        *_flips(),
        A.Rotate(limit=20, p=0.5, **_BORDER),
        A.Affine(translate_percent=(-0.05, 0.05), scale=(0.9, 1.1), p=0.5, **_BORDER),
        A.ElasticTransform(alpha=60, sigma=6, p=0.5, **_BORDER),
        A.Sequential([
            A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2, hue=0.05, p=1.0),
            A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.1, 2.0), p=1.0),
        ], p=0.8),
    ]


def _paper003() -> list[A.BasicTransform]:
    """003: random horizontal and vertical flips and rotations."""
    return [*_flips(), A.Rotate(limit=30, p=0.5, **_BORDER)]


RECIPES: dict[str, Callable[[], list[A.BasicTransform]]] = {
    "none": list, "basic": list,  # "basic": the old name of "none" (kept for old configs)
    "paper000": _paper000, "paper001": _paper001, "paper002": _paper002, "paper003": _paper003, "paper004": _flips,
}


def build_transforms(name: str, image_size: Size, train: bool, seed: int | None = None, *,
                     mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD) -> A.Compose:
    """Train: resize + recipe + normalise (ImageNet's mean/std unless given); eval (train=False):
    resize + normalise only.

    ``seed``: albumentations 2 draws from the Compose's own generator (global seeds never reach
    it), so a run passes its seed here; loader workers re-seed it (datamodule.seed_worker).
    """
    if name not in RECIPES:
        raise LesionBenchError(f"unknown augmentation '{name}' (known recipes: {', '.join(RECIPES)})")
    middle = RECIPES[name]() if train else []
    return A.Compose([
        A.Resize(*hw(image_size), interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST),
        *middle,
        A.Normalize(mean=mean, std=std),
        ToTensorV2(transpose_mask=True),
    ], seed=seed)
