"""`lesionbench score` against the ISIC organisers' own scorer (isic-challenge-scoring, the dev extra)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionbench.errors import LesionBenchError
from lesionbench.reporting.score import score_folder

isic = pytest.importorskip("isic_challenge_scoring", reason="the organisers' scorer is in the dev extra")
from isic_challenge_scoring import task2  # noqa: E402
from isic_challenge_scoring.segmentation import SegmentationScore  # noqa: E402

ATTRS = ["globules", "milia_like_cyst", "negative_network", "pigment_network", "streaks"]


def _save(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _blob(rng: np.random.Generator, h: int, w: int, p_empty: float = 0.2) -> np.ndarray:
    """An ellipse somewhere, sometimes nothing: empty masks exercise both scorers' freebies."""
    if rng.random() < p_empty:
        return np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, h / 2), rng.uniform(2, w / 2)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def _jitter(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """A prediction: the truth shifted a little, with noise; some images land below the 0.65 threshold."""
    shifted = np.roll(mask, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
    return shifted ^ (rng.random(mask.shape) < rng.uniform(0, 0.08))


def test_segmentation_agrees_with_the_organisers_scorer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = int(rng.integers(24, 48)), int(rng.integers(24, 64))  # sizes vary, as in ISIC
        truth = _blob(rng, h, w)
        _save(tmp_path / "truth" / f"ISIC_{i:07d}_segmentation.png", truth)
        _save(tmp_path / "pred" / f"ISIC_{i:07d}_segmentation.png", _jitter(rng, truth) if i != 3 else truth * 0)
    ours = score_folder(tmp_path / "truth", tmp_path / "pred")
    theirs = SegmentationScore.from_dir(tmp_path / "truth", tmp_path / "pred").to_dict()
    assert ours.task == "segmentation" and set(theirs) <= set(ours.result)
    assert set(ours.result["macro_average"]) == set(theirs["macro_average"])
    for key, value in theirs["macro_average"].items():
        assert ours.result["macro_average"][key] == pytest.approx(value, abs=1e-6), key
    assert ours.result["overall"] == pytest.approx(theirs["overall"], abs=1e-6)
    assert ours.result["validation"] == pytest.approx(theirs["validation"], abs=1e-6)
    theirs_text = SegmentationScore.from_dir(tmp_path / "truth", tmp_path / "pred").to_string()
    names = [line.split()[0] for line in theirs_text.split("Macro averaged metrics:\n")[1].splitlines()]
    ours_table = ours.text.split("Macro averaged metrics:\n")[1].split("\n\n")[0]
    ours_names = [line.split()[0] for line in ours_table.splitlines()]
    assert ours.text.startswith("Overall: ") and ours_names == names  # the same table, in the same order
    assert {"hd95", "assd"} <= set(ours.result["boundary"]) and ours.result["boundary"]["hd95"] > 0


def test_task2_agrees_with_the_organisers_scorer(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for i in range(6):
        h, w = int(rng.integers(24, 48)), int(rng.integers(24, 64))
        for a in ATTRS:
            truth = _blob(rng, h, w, p_empty=0.6)  # most attributes are absent, as in Task 2
            pred = _jitter(rng, truth) if rng.random() < 0.7 else np.zeros_like(truth)
            _save(tmp_path / "truth" / f"ISIC_{i:07d}_attribute_{a}.png", truth)
            _save(tmp_path / "pred" / f"ISIC_{i:07d}_attribute_{a}.png", pred)
    ours = score_folder(tmp_path / "truth", tmp_path / "pred")
    theirs = task2.score(tmp_path / "truth", tmp_path / "pred")
    assert ours.task == "attribute" and set(ours.result) == set(theirs)
    for key in [*ATTRS, "micro_average"]:
        for metric in ("jaccard", "dice"):
            assert ours.result[key][metric] == pytest.approx(theirs[key][metric], abs=1e-6), (key, metric)
    assert ours.result["overall"] == pytest.approx(theirs["overall"], abs=1e-6)


@pytest.mark.slow
def test_score_command_prints_json_with_boundary_distances(tmp_path: Path) -> None:
    truth, pred = np.zeros((6, 8), bool), np.zeros((6, 8), bool)
    truth[0, 0], pred[3, 4] = True, True  # one pixel each, 5 apart: HD95 = ASSD = 5
    _save(tmp_path / "t" / "ISIC_0000001_segmentation.png", truth)
    _save(tmp_path / "p" / "ISIC_0000001_segmentation.png", pred)
    _save(tmp_path / "t" / "ISIC_0000002_segmentation.png", truth)
    _save(tmp_path / "p" / "ISIC_0000002_segmentation.png", np.zeros_like(pred))  # empty: the diagonal, 10
    exe = shutil.which("lesionbench") or Path(sys.executable).with_name("lesionbench")
    done = subprocess.run([str(exe), "score", str(tmp_path / "t"), str(tmp_path / "p"), "--output", "json"],
                          capture_output=True, text=True, env=os.environ, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["overall"] == 0.0 and result["macro_average"]["dice"] == 0.0
    assert result["boundary"]["hd95"] == pytest.approx((5 + math.hypot(6, 8)) / 2)
    assert result["boundary"]["assd"] == pytest.approx(7.5)


def test_score_names_the_missing_or_misfit_prediction(tmp_path: Path) -> None:
    _save(tmp_path / "t" / "ISIC_0000001_segmentation.png", np.ones((6, 8), bool))
    (tmp_path / "p").mkdir()
    with pytest.raises(LesionBenchError, match="no prediction named ISIC_0000001_segmentation"):
        score_folder(tmp_path / "t", tmp_path / "p")
    _save(tmp_path / "p" / "ISIC_0000001_segmentation.png", np.ones((8, 6), bool))
    with pytest.raises(LesionBenchError, match="size 6×8 but its ground truth"):
        score_folder(tmp_path / "t", tmp_path / "p")
