"""Cross-dataset evaluation: leaked images excluded and counted, results resumable, the table written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lesionbench.data.synthetic import write_all
from lesionbench.io import read_json
from lesionbench.reporting.generalisation import Cell, primary_per_image
from lesionbench.reporting.stats import mean_ci

COUNTS = {"isic2016": {"train": 6, "test": 6}, "isic2017": {"train": 6, "val": 3, "test": 14},
          "isic2018": {"train": 16, "val": 3, "test": 4}, "kvasir-seg": {"all": 6}}
BASE = """name: gen
dataset: {image_size: 32, augmentation: none}
model: {name: unet, options: {base_channels: 8}}
trainer: {epochs: 1, batch_size: 4, accelerator: cpu, devices: 1}
"""
SUITE = """name: gen
matrix: {base: _gen_base.yaml, models: [{name: unet, label: unet}], datasets: [isic2018], seeds: [0]}
cross_eval: {isic2018: [isic2016, isic2017]}
"""


def _cli() -> str:
    return shutil.which("lesionbench") or str(Path(sys.executable).with_name("lesionbench"))


@pytest.mark.slow
def test_suite_cross_eval_excludes_leaks_and_writes_table(tmp_path: Path) -> None:
    replica = write_all(tmp_path / "synthetic", seed=0, counts=COUNTS, size=(40, 48))
    # a byte-identical copy of a 2018 training image under a new id in the 2016 test set
    src18 = replica / "isic2018"
    d16 = replica / "isic2016"
    shutil.copy(src18 / "ISIC2018_Task1-2_Training_Input/ISIC_0012000.jpg",
                d16 / "ISBI2016_ISIC_Part1_Test_Data/ISIC_0099999.jpg")
    shutil.copy(src18 / "ISIC2018_Task1_Training_GroundTruth/ISIC_0012000_segmentation.png",
                d16 / "ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0099999_Segmentation.png")
    experiments = tmp_path / "experiments"
    (experiments / "suites").mkdir(parents=True)
    (experiments / "_gen_base.yaml").write_text(BASE)
    (experiments / "suites" / "gen.yaml").write_text(SUITE)
    env = {**os.environ, "LESIONBENCH_SYNTHETIC": str(replica), "LESIONBENCH_WORKDIR": str(tmp_path / "work"),
           "LESIONBENCH_EXPERIMENTS": str(experiments)}
    out = tmp_path / "results"
    proc = subprocess.run([_cli(), "run", "--suite", "gen", "--synthetic", "--quick", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = out / "gen+synthetic+quick" / "isic2018_unet__s0"

    m16 = read_json(run_dir / "eval/isic2016/metrics.json")
    assert m16["excluded"] == {"count": 4, "by_id": 3, "by_bytes": 1, "of": 7,
                               "ids": ["ISIC_0005000", "ISIC_0005001", "ISIC_0005002", "ISIC_0099999"]}
    rows16 = pd.read_csv(run_dir / "eval/isic2016/per_image.csv")
    assert sorted(rows16["id"]) == ["ISIC_0005003", "ISIC_0005004", "ISIC_0005005"] and m16["n_test"] == 3
    assert m16["challenge"]["metric"] == "jaccard" and {"hd95", "assd"} <= set(rows16.columns)
    assert m16["challenge"]["value"] == pytest.approx(rows16["iou"].mean(), abs=1e-9)
    m17 = read_json(run_dir / "eval/isic2017/metrics.json")
    assert (m17["excluded"]["count"], m17["excluded"]["of"], m17["n_test"]) == (10, 14, 4)

    board = (out / "gen+synthetic+quick" / "leaderboard.md").read_text()
    assert "## Generalisation across datasets" in board
    assert "isic2018 → isic2016: 4 of 7 excluded" in board and "isic2018 → isic2017: 10 of 14 excluded" in board
    assert f"{m16['challenge']['value']:.4f}" in board
    assert (out / "gen+synthetic+quick" / "plots" / "generalisation.png").is_file()

    again = subprocess.run([_cli(), "evaluate", "--run", str(run_dir), "--dataset", "isic2016"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("skipped") and "4 of 7 excluded" in again.stdout


def _rows(iou: list[float]) -> pd.DataFrame:
    """per_image.csv rows whose counts give these Jaccards (100-pixel images, tp = 100·iou)."""
    tp = np.round(np.array(iou) * 100)
    return pd.DataFrame({"id": [f"i{k}" for k in range(len(iou))], "tp": tp, "fp": 100 - tp, "fn": 0.0,
                         "tn": 0.0, "iou": tp / 100, "dice": 2 * tp / (tp + 100)})


def test_primary_metric_and_seed_and_image_ci() -> None:
    rows = _rows([0.9, 0.64, 0.65])
    name, values = primary_per_image("isic2018", rows)
    assert name == "thresholded_jaccard" and values.tolist() == pytest.approx([0.9, 0.0, 0.65])
    assert primary_per_image("isic2016", rows)[1].tolist() == pytest.approx([0.9, 0.64, 0.65])
    assert primary_per_image("kvasir-seg", rows)[1].tolist() == pytest.approx(rows["dice"].tolist())
    cell = Cell()
    cell.add(0, "isic2016", rows)
    cell.add(1, "isic2016", _rows([0.8, 0.5, 0.6]))
    mean, low, high = cell.summary()
    assert mean == pytest.approx(np.mean([0.9, 0.64, 0.65, 0.8, 0.5, 0.6]))
    grid = np.array([[0.9, 0.64, 0.65], [0.8, 0.5, 0.6]])
    _, lo, hi = mean_ci(grid, np.ones_like(grid))  # the leaderboard's interval: seeds and images
    assert (low, high) == pytest.approx((max(lo, 0.0), min(hi, 1.0))) and low < mean < high
