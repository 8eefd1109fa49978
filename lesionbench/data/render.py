"""Procedural dermoscopy and colonoscopy images for the synthetic replicas.

Why so elaborate: the replicas must separate architectures (issue 7). Lesions are irregular
Fourier blobs with fuzzy borders, texture, hairs, freckle distractors, vignetting, small and
low-contrast cases and ~5% empty images, so a model has to learn shape and context.
Everything is numpy-vectorised and rendered at <= 256 px, then upscaled for large images.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SKIN = np.array([[236, 198, 172], [214, 160, 128], [190, 135, 100], [150, 100, 72]], np.float32)
LESION = np.array([[92, 56, 40], [140, 92, 62], [168, 86, 82], [104, 100, 122], [54, 38, 32]], np.float32)
ATTR_P = {"globules": 0.2, "milia_like_cyst": 0.15, "negative_network": 0.06, "pigment_network": 0.35, "streaks": 0.06}
MAX_RENDER = 256


def smooth(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random grid upsampled bicubically."""
    small = rng.random((cells, cells)).astype(np.float32)
    out = np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.BICUBIC))
    return np.clip(out, 0, 1)


def blob_field(rng: np.random.Generator, h: int, w: int, r0: float, cy: float, cx: float) -> np.ndarray:
    """Signed 'inside-ness' (pixels): Fourier-perturbed ellipse merged with optional lobes + border noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def ellipse(cy: float, cx: float, r: float, harmonics: int) -> np.ndarray:
        # r(theta) = r * (1 + sum_k a_k cos(k theta + phi_k)); cos/sin(k theta) from powers of e^{i theta}
        a, ratio = rng.uniform(0, np.pi), rng.uniform(0.55, 1.0)
        dy, dx = yy - cy, xx - cx
        u, v = dx * np.cos(a) + dy * np.sin(a), (-dx * np.sin(a) + dy * np.cos(a)) / ratio
        d = np.sqrt(u * u + v * v)
        e = ((u + 1j * v) / (d + 1e-6)).astype(np.complex64)
        rr, p = np.ones_like(d), e
        for k in range(2, 2 + harmonics):
            p = p * e
            amp, phi = rng.uniform(0, 0.28) / np.sqrt(k), rng.uniform(0, 2 * np.pi)
            rr += amp * (p.real * np.cos(phi) - p.imag * np.sin(phi))
        return r * rr - d

    f = ellipse(cy, cx, r0, 6)
    for _ in range(rng.choice([0, 0, 1, 2])):
        ang, dist = rng.uniform(0, 2 * np.pi), r0 * rng.uniform(0.5, 0.9)
        f = np.maximum(f, ellipse(cy + dist * np.sin(ang), cx + dist * np.cos(ang), r0 * rng.uniform(0.35, 0.7), 3))
    return f + (smooth(rng, h, w, rng.integers(6, 14)) - 0.5) * r0 * rng.uniform(0.1, 0.45)


def _dots(rng: np.random.Generator, h: int, w: int, inside: np.ndarray, n: int, rad: float) -> np.ndarray:
    """Union of n discs centred on random pixels of ``inside``."""
    ys, xs = np.nonzero(inside)
    out = np.zeros((h, w), bool)
    if len(ys) == 0:
        return out
    yy, xx = np.ogrid[0:h, 0:w]
    for i in rng.integers(0, len(ys), n):
        out |= (yy - ys[i]) ** 2 + (xx - xs[i]) ** 2 <= (rad * rng.uniform(0.6, 1.3)) ** 2
    return out


def _attributes(rng: np.random.Generator, f: np.ndarray, r0: float, img: np.ndarray) -> dict[str, np.ndarray]:
    """Sparse Task-2 sub-patterns inside the lesion, painted into ``img`` in place."""
    h, w = f.shape
    lesion = f > 0
    out = {k: np.zeros((h, w), bool) for k in ATTR_P}
    if not lesion.any():
        return out
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for name, p in ATTR_P.items():
        if rng.random() > p:
            continue
        if name in ("pigment_network", "negative_network"):
            region = lesion & (smooth(rng, h, w, 4) > rng.uniform(0.35, 0.55))
            per = max(1.5, r0 / rng.uniform(8, 14))
            warp = 3 * smooth(rng, h, w, 6)
            lines = (np.abs(np.sin(xx / per + warp)) < 0.2) | (np.abs(np.sin(yy / per - warp)) < 0.2)
            img[region & lines] *= 0.6 if name == "pigment_network" else 1.35
            out[name] = region
        elif name in ("globules", "milia_like_cyst"):
            dots = _dots(rng, h, w, lesion & (f > 0.15 * r0), int(rng.integers(3, 12)), max(1.5, 0.07 * r0))
            dots &= lesion
            img[dots] = img[dots] * 0.45 if name == "globules" else img[dots] * 0.3 + 170
            out[name] = dots
        else:  # streaks: radial stripes in a peripheral sector
            th = np.arctan2(yy - yy[lesion].mean(), xx - xx[lesion].mean())
            sector = np.cos(th - rng.uniform(-np.pi, np.pi)) > 0.3
            band = lesion & (f < 0.3 * r0) & sector
            img[band & (np.sin(th * rng.integers(20, 40)) > 0.5)] *= 0.55
            out[name] = band
    return out


def _hairs(img: Image.Image, rng: np.random.Generator, n: int) -> None:
    draw, (w, h) = ImageDraw.Draw(img), img.size
    width = max(1, round(min(w, h) / 220))
    for _ in range(n):
        p = rng.uniform([0, 0], [w, h], (3, 2))
        t = np.linspace(0, 1, 24)[:, None]
        pts = (1 - t) ** 2 * p[0] + 2 * (1 - t) * t * p[1] + t ** 2 * p[2]
        c = int(rng.integers(15, 70))
        draw.line([tuple(q) for q in pts], fill=(c, c - 5 if c > 5 else 0, c // 2), width=int(width * rng.integers(1, 3)))


def _finish(rng: np.random.Generator, img: np.ndarray, h: int, w: int, vign: float) -> Image.Image:
    """Illumination, vignetting, upscaling to (h, w) and sensor noise."""
    rh, rw = img.shape[:2]
    yy, xx = np.mgrid[0:rh, 0:rw].astype(np.float32)
    rad = np.hypot((yy - rh / 2) / (rh / 2), (xx - rw / 2) / (rw / 2)) / np.sqrt(2)
    img = img * (0.85 + 0.3 * smooth(rng, rh, rw, 3))[..., None] * (1 - vign * rad ** 2.5)[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if (rh, rw) != (h, w):
        pil = pil.resize((w, h), Image.BICUBIC)
    arr = np.asarray(pil, np.int16) + rng.normal(0, rng.uniform(2, 7), (h, w, 1)).astype(np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _upmask(m: np.ndarray, h: int, w: int) -> np.ndarray:
    if m.shape == (h, w):
        return m
    return np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)) > 127


def _scale(h: int, w: int) -> tuple[int, int]:
    k = max(1.0, max(h, w) / MAX_RENDER)
    return max(8, round(h / k)), max(8, round(w / k))


def render_skin(rng: np.random.Generator, h: int, w: int) -> tuple[Image.Image, np.ndarray, dict[str, np.ndarray]]:
    """A dermoscopy-like image, its lesion mask (bool h×w) and five attribute masks."""
    rh, rw = _scale(h, w)
    s = min(rh, rw)
    skin = SKIN[rng.integers(len(SKIN))] + rng.uniform(-14, 14, 3)
    img = skin * (0.9 + 0.2 * smooth(rng, rh, rw, 8))[..., None]
    img = np.broadcast_to(img, (rh, rw, 3)).astype(np.float32).copy()
    empty = rng.random() < 0.05
    r0 = s * rng.choice([rng.uniform(0.07, 0.12), rng.uniform(0.12, 0.28), rng.uniform(0.28, 0.48)], p=[0.15, 0.6, 0.25])
    cy, cx = rh / 2 + rng.uniform(-0.25, 0.25) * rh, rw / 2 + rng.uniform(-0.25, 0.25) * rw
    f = np.full((rh, rw), -1e3, np.float32) if empty else blob_field(rng, rh, rw, r0, cy, cx)
    contrast = rng.uniform(0.18, 0.3) if rng.random() < 0.15 else rng.uniform(0.35, 1.0)
    col = skin + contrast * (LESION[rng.integers(len(LESION))] - skin)
    inner = np.clip(f / r0, 0, 1) * rng.uniform(0, 0.35)
    tex = smooth(rng, rh, rw, int(rng.integers(10, 30))) - 0.5
    lesion_img = col * (1 - inner + 0.5 * contrast * tex)[..., None]
    alpha = 1 / (1 + np.exp(np.clip(-f / rng.uniform(0.5, max(0.6, 0.12 * r0)), -30, 30)))
    img = img * (1 - alpha[..., None]) + lesion_img * alpha[..., None]
    attrs = _attributes(rng, f, r0, img)
    if rng.random() < 0.3:  # freckles: small dark distractors outside the lesion, not in the mask
        spots = _dots(rng, rh, rw, f < -0.3 * r0, int(rng.integers(1, 7)), max(1.5, 0.02 * s)) & (f < 0)
        img[spots] = img[spots] * 0.55 + 0.45 * (skin + 0.6 * (LESION[1] - skin))
    pil = _finish(rng, img, h, w, rng.uniform(0, 0.9))
    if rng.random() < 0.35:
        _hairs(pil, rng, int(rng.integers(1, 14)))
    return pil, _upmask(f > 0, h, w), {k: _upmask(v, h, w) for k, v in attrs.items()}


def render_polyp(rng: np.random.Generator, h: int, w: int) -> tuple[Image.Image, np.ndarray]:
    """A colonoscopy-like frame: pink mucosa, folds, vessels, specular highlights and a domed polyp."""
    rh, rw = _scale(h, w)
    s = min(rh, rw)
    base = np.array([205, 105, 95], np.float32) + rng.uniform(-20, 20, 3)
    img = base * (0.6 + 0.6 * smooth(rng, rh, rw, 5))[..., None]
    r0 = s * rng.uniform(0.08, 0.4)
    cy, cx = rh / 2 + rng.uniform(-0.3, 0.3) * rh, rw / 2 + rng.uniform(-0.3, 0.3) * rw
    f = blob_field(rng, rh, rw, r0, cy, cx)
    yy, xx = np.mgrid[0:rh, 0:rw].astype(np.float32)
    dome = np.clip(1 - np.hypot(yy - cy + 0.3 * r0, xx - cx + 0.3 * r0) / (1.6 * r0), 0, 1)
    contrast = rng.uniform(0.15, 0.8)
    pcol = base + contrast * (np.array([235, 150, 130], np.float32) - base) + rng.uniform(-15, 15, 3)
    polyp = pcol * (0.75 + 0.45 * dome + 0.3 * (smooth(rng, rh, rw, 20) - 0.5))[..., None]
    alpha = 1 / (1 + np.exp(np.clip(-f / rng.uniform(0.5, max(0.6, 0.08 * r0)), -30, 30)))[..., None]
    img = img * (1 - alpha) + polyp * alpha
    spec = smooth(rng, rh, rw, int(rng.integers(12, 30))) > rng.uniform(0.93, 0.99)
    img[spec] = 245
    pil = _finish(rng, img, h, w, rng.uniform(0.6, 1.2))
    if rng.random() < 0.3:  # the green navigation box of the Olympus scope, bottom-left
        d, b = ImageDraw.Draw(pil), int(0.22 * min(h, w))
        d.rectangle([0, h - b, b, h - 1], fill=(20, 90, 40))
    return pil, _upmask(f > 0, h, w)
