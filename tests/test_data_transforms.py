"""Augmentation recipes: masks stay aligned with images; unknown names fail in one line."""

import numpy as np
import pytest
import torch

from lesionbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, RECIPES, build_transforms
from lesionbench.errors import LesionBenchError


def _blob(h: int = 64, w: int = 56, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(16, h - 16), rng.uniform(16, w - 16)
    return (((yy - cy) / 13) ** 2 + ((xx - cx) / 8) ** 2 <= 1).astype(np.uint8)


def _centroid(m: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(m, as_tuple=True)
    return torch.stack([ys.float().mean(), xs.float().mean()])


def _unnorm(img: torch.Tensor) -> torch.Tensor:
    return img * torch.tensor(IMAGENET_STD)[:, None, None] + torch.tensor(IMAGENET_MEAN)[:, None, None]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(1, float((a | b).sum()))


@pytest.mark.parametrize("seed", range(12))
def test_paper002_keeps_mask_aligned(seed: int) -> None:
    """The mask is painted into the image (grey, so hue/saturation cannot move it); after the full
    spatial + photometric recipe the bright pixels must still coincide with the mask."""
    m = _blob(seed=seed)
    image = np.repeat(m[..., None] * 255, 3, axis=2).astype(np.uint8)
    tf = build_transforms("paper002", 48, train=True)
    tf.set_random_seed(seed)  # albumentations 2 draws from its own generator, not numpy's or random's
    out = tf(image=image, mask=m[..., None])
    img, mask = _unnorm(out["image"])[0], out["mask"][0].bool()
    assert out["image"].shape == (3, 48, 48) and out["mask"].shape == (1, 48, 48)
    assert out["image"].dtype == torch.float32
    bright = img > (img.max() + img.min()) / 2
    if mask.sum() > 20:  # blob not rotated/translated out of the frame
        assert _iou(bright, mask) > 0.75
        assert float((_centroid(bright) - _centroid(mask)).norm()) < 1.0  # a shift of 1 px would show


def test_every_channel_moves_together() -> None:
    a, b = _blob(seed=1), _blob(seed=2)
    image = np.stack([a * 255, b * 255, np.zeros_like(a)], -1).astype(np.uint8)
    tf = build_transforms("paper003", 40, train=True)
    for _ in range(10):
        out = tf(image=image, mask=np.stack([a, b], -1))
        img = _unnorm(out["image"])
        for c in range(2):
            bright, mask = img[c] > 0.5, out["mask"][c].bool()
            assert _iou(bright, mask) > 0.75
            assert float((_centroid(bright) - _centroid(mask)).norm()) < 1.0


def test_eval_is_resize_and_normalise_only() -> None:
    image = np.full((20, 30, 3), 255, np.uint8)
    out = build_transforms("paper002", 16, train=False)(image=image, mask=np.ones((20, 30, 1), np.uint8))
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out["image"][:, 0, 0], expected, atol=1e-5)
    assert out["mask"].shape == (1, 16, 16) and int(out["mask"].sum()) == 256


def test_all_recipes_build_and_unknown_name() -> None:
    for name in RECIPES:
        out = build_transforms(name, 24, train=True)(image=np.zeros((30, 30, 3), np.uint8),
                                                     mask=np.zeros((30, 30, 5), np.uint8))
        assert out["mask"].shape == (5, 24, 24)
    with pytest.raises(LesionBenchError, match="unknown augmentation 'fancy'.*paper002"):
        build_transforms("fancy", 24, train=True)
