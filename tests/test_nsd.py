"""Normalized Surface Dice (issue 30 item 6): ours against MONAI's ``compute_surface_dice`` (the dev extra),
its empty-mask policy, its tolerances, and where it is reported (summary, per_image.csv, `score`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from lesionbench.data.layouts import LAYOUTS
from lesionbench.metrics.boundary import (
    NSD_TOLERANCES,
    boundary_distances,
    image_boundary,
    nsd_tolerance,
    surface_metrics,
)

REPO = Path(__file__).resolve().parents[1]
REAL = Path(os.environ.get("LESIONBENCH_KVASIR_REAL") or REPO / ".." / "shared" / "data" / "kvasir-seg").resolve()
#: MONAI warns about its own deprecated argument and about empty masks (which the tests pass on purpose)
MONAI_QUIET = [pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning"),
               pytest.mark.filterwarnings("ignore:the (ground truth|prediction) of class:UserWarning")]


def _nsd(pred: np.ndarray, truth: np.ndarray, tolerance: float) -> float:
    return surface_metrics(torch.from_numpy(pred), torch.from_numpy(truth), tolerance)[2]


def _monai(pred: np.ndarray, truth: np.ndarray, tolerance: float) -> float:
    from monai.metrics import compute_surface_dice

    def one_hot(m: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([~m, m]))[None].float()
    return float(compute_surface_dice(one_hot(pred), one_hot(truth), [tolerance, tolerance],
                                      include_background=True, use_subvoxels=False)[0, 1])


def _cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Hand-made and random pairs (32-64 px, odd sides): holes, one-pixel objects, borders, many parts."""
    rng = np.random.default_rng(30)
    yy, xx = np.mgrid[:37, :53]
    disc = (yy - 18) ** 2 + (xx - 26) ** 2 <= 12 ** 2
    ring = disc & ((yy - 18) ** 2 + (xx - 26) ** 2 > 5 ** 2)  # a hole
    pixel_a, pixel_b = np.zeros((33, 47), bool), np.zeros((33, 47), bool)
    pixel_a[4, 5], pixel_b[7, 9] = True, True  # one pixel each, 5 apart
    ell = np.zeros((41, 64), bool)
    ell[3:30, 2:9], ell[23:30, 2:40] = True, True  # an L touching nothing
    border = np.zeros((32, 32), bool)
    border[:10, :] = True  # touches three image borders
    cases = [("disc-vs-ring", disc, ring), ("ring-vs-shifted-disc", ring, np.roll(disc, (2, -3), (0, 1))),
             ("one-pixel-each", pixel_a, pixel_b), ("one-pixel-in-blob", pixel_a, ndimage.binary_dilation(
                 pixel_b, iterations=4)), ("L-vs-dilated-L", ell, ndimage.binary_dilation(ell, iterations=2)),
             ("border-vs-shifted", border, np.roll(border, 3, 0)), ("same", disc, disc.copy())]
    for i in range(6):  # random speckle, opened/closed into odd shapes with holes and several parts
        h, w = int(rng.integers(32, 65)), int(rng.integers(32, 65))
        a = ndimage.binary_opening(rng.random((h, w)) < rng.uniform(0.3, 0.7))
        b = ndimage.binary_closing(rng.random((h, w)) < rng.uniform(0.2, 0.6))
        cases.append((f"random-{i}-{h}x{w}", a, b))
    return cases


@pytest.mark.timeout(60)
def test_every_dataset_has_one_nsd_tolerance_with_its_reason() -> None:
    assert set(NSD_TOLERANCES) == set(LAYOUTS)
    for name, tol in NSD_TOLERANCES.items():
        assert tol.px > 0 and len(tol.why) > 20 and nsd_tolerance(name) == tol.px, name
    assert nsd_tolerance("kvasir-seg") == 8 and nsd_tolerance("isic2018") == 13 and nsd_tolerance("synthetic") == 2


@pytest.mark.timeout(60)
def test_nsd_on_hand_made_masks_and_our_empty_policy() -> None:
    a, b = np.zeros((6, 12), bool), np.zeros((6, 12), bool)
    a[0, 0], b[3, 4] = True, True  # one boundary pixel each, 5 apart
    assert _nsd(a, b, 4.99) == 0.0 and _nsd(a, b, 5.0) == 1.0  # within tau means d <= tau
    wide = a.copy()
    wide[0, 10] = True  # prediction pixels at 0 and 10 from the truth's one: 2 of 3 within 5
    assert _nsd(wide, a, 5.0) == pytest.approx(2 / 3)
    empty = np.zeros((6, 12), bool)
    assert _nsd(empty, empty, 2.0) == 1.0 and _nsd(a, empty, 2.0) == 0.0 and _nsd(empty, a, 100.0) == 0.0
    assert surface_metrics(torch.from_numpy(a), torch.from_numpy(b), 2.0)[:2] == boundary_distances(
        torch.from_numpy(a), torch.from_numpy(b)) == (5.0, 5.0)  # one pass, HD95/ASSD unchanged
    both = image_boundary(torch.from_numpy(np.stack([a, empty]))[:, None], torch.from_numpy(np.stack([b, b]))[:, None],
                          tolerance=5.0)
    assert both.shape == (2, 1, 3) and both[:, 0, 2].tolist() == [1.0, 0.0]
    assert image_boundary(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]).shape == (1, 1, 2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tolerance", [0.0, 1.0, 1.5, 2.0, 5.0])
@MONAI_QUIET[0]
@MONAI_QUIET[1]
def test_nsd_equals_monai_on_hand_made_and_random_masks(tolerance: float) -> None:
    pytest.importorskip("monai", reason="MONAI is in the dev extra")
    for name, pred, truth in _cases():
        assert pred.any() and truth.any(), name
        for p, t in ((pred, truth), (truth, pred)):
            assert _nsd(p, t, tolerance) == pytest.approx(_monai(p, t, tolerance), abs=1e-6), (name, tolerance)
    one, empty = _cases()[2][1], np.zeros((33, 47), bool)
    assert _nsd(one, empty, tolerance) == _monai(one, empty, tolerance) == 0.0  # exactly one empty: 0 in both
    assert _nsd(empty, one, tolerance) == _monai(empty, one, tolerance) == 0.0
    # both empty: MONAI gives NaN, we give 1 (our stated policy); not compared
    assert np.isnan(_monai(empty, empty, tolerance)) and _nsd(empty, empty, tolerance) == 1.0


@pytest.mark.timeout(120)
@pytest.mark.skipif(not (REAL / "Kvasir-SEG" / "masks").is_dir(),
                    reason=f"real Kvasir-SEG not found at {REAL} (set LESIONBENCH_KVASIR_REAL)")
@MONAI_QUIET[0]
@MONAI_QUIET[1]
def test_nsd_equals_monai_on_real_kvasir_masks() -> None:
    """Five real polyp masks (JPEG, binarised as the loader does, at half size): against a shifted and
    dilated copy of themselves and against another image's mask, at the Kvasir-SEG tolerance and 2 px."""
    pytest.importorskip("monai", reason="MONAI is in the dev extra")
    from lesionbench.data.decode import image_size, load_mask

    paths = sorted((REAL / "Kvasir-SEG" / "masks").glob("*.jpg"))[::200][:5]
    assert len(paths) == 5
    threshold = LAYOUTS["kvasir-seg"].mask_threshold
    compared = 0
    for i, path in enumerate(paths):
        h, w = image_size(path)
        size = (h // 2, w // 2)
        truth = load_mask(path, threshold, size).astype(bool)
        other = load_mask(paths[(i + 1) % len(paths)], threshold, size).astype(bool)
        moved = ndimage.binary_dilation(np.roll(truth, (3, -5), (0, 1)), iterations=2)
        for pred in (moved, other):
            for tol in (nsd_tolerance("kvasir-seg") / 2, 2.0):  # the tolerance at half size, and a strict one
                ours, theirs = _nsd(pred, truth, tol), _monai(pred, truth, tol)
                assert ours == pytest.approx(theirs, abs=1e-6), (path.name, tol)
                compared += 1
    assert compared == 20


@pytest.mark.timeout(60)
def test_summarize_reports_nsd_beside_hd95_and_records_the_tolerance() -> None:
    from lesionbench.metrics.scores import summarize

    stats = torch.tensor([[[1, 1, 0, 2]], [[3, 0, 1, 0]]], dtype=torch.float64)
    surface = torch.tensor([[[2.0, 1.0, 0.5]], [[4.0, 3.0, 1.0]]], dtype=torch.float64)
    metrics, rows = summarize(stats, ["a", "b"], "kvasir-seg", ["polyp"], boundary=surface, nsd_tolerance=8.0)
    assert metrics["per_image"]["nsd"] == 0.75 and metrics["per_class"]["polyp"]["nsd"] == 0.75
    assert metrics["per_image"]["hd95"] == 3.0 and metrics["nsd_tolerance"] == 8.0
    assert [r["nsd"] for r in rows] == [0.5, 1.0] and rows[1]["assd"] == 3.0
    old, old_rows = summarize(stats, ["a", "b"], "kvasir-seg", ["polyp"], boundary=surface[..., :2],
                              nsd_tolerance=8.0)  # HD95/ASSD only (evaluate, nnU-Net): no nsd, no tolerance
    assert "nsd" not in old["per_image"] and "nsd_tolerance" not in old and "nsd" not in old_rows[0]


@pytest.mark.timeout(60)
def test_committed_run_folders_without_nsd_read_exactly_as_before() -> None:
    from lesionbench.runfolder import read_metrics, read_per_image

    found = sorted((REPO / "results").glob("*/*/metrics.json"))
    assert {p.parent.parent.name for p in found} >= {"demo", "kvasir-cpu"}
    old = 0
    for path in found:
        raw = json.loads(path.read_text())
        metrics = read_metrics(path.parent)
        assert metrics.model_dump(mode="json", exclude_none=True) == raw, path
        row = read_per_image(path.parent)[0]
        assert "hd95" in row.model_extra
        if "nsd_tolerance" in raw:  # made since NSD was computed: every row has it
            assert "nsd" in metrics.per_image and "nsd" in row.model_extra, path
            continue
        old += 1
        assert metrics.nsd_tolerance is None and metrics.chance is None and "nsd" not in metrics.per_image
        assert "nsd" not in row.model_extra
    assert old > 0, "the committed runs made before NSD (results/kvasir-cpu seeds 0-2) are still there"


def _save(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path


@pytest.mark.timeout(60)
def test_score_reports_nsd_at_the_dataset_tolerance(tmp_path: Path) -> None:
    from lesionbench.reporting.score import score_dataset_folder, score_folder

    cases = [c for c in _cases() if c[1].shape == c[2].shape][:4]
    for i, (_, pred, truth) in enumerate(cases):
        _save(tmp_path / "t" / f"ISIC_{i:07d}_segmentation.png", truth)
        _save(tmp_path / "p" / f"ISIC_{i:07d}_segmentation.png", pred)
        _save(tmp_path / "kt" / f"img{i}.png", truth)
        _save(tmp_path / "kp" / f"img{i}_mask.png", pred)
    isic = score_folder(tmp_path / "t", tmp_path / "p")
    want = np.mean([_nsd(p, t, 13.0) for _, p, t in cases])
    assert isic.result["boundary"]["nsd"] == pytest.approx(want) and isic.result["boundary"]["nsd_tolerance"] == 13
    assert "Normalized Surface Dice at 13 px" in isic.text
    strict = score_folder(tmp_path / "t", tmp_path / "p", nsd_tolerance_px=1.0)
    assert strict.result["boundary"]["nsd"] == pytest.approx(np.mean([_nsd(p, t, 1.0) for _, p, t in cases]))
    kvasir = score_dataset_folder(tmp_path / "kt", tmp_path / "kp", "kvasir-seg")
    assert kvasir.result["nsd_tolerance"] == 8.0
    assert [kvasir.result["per_image"][f"img{i}"]["nsd"] for i in range(len(cases))] == pytest.approx(
        [_nsd(p, t, 8.0) for _, p, t in cases])
    assert kvasir.result["mean"]["nsd"] == pytest.approx(np.mean([_nsd(p, t, 8.0) for _, p, t in cases]))
