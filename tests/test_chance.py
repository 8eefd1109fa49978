"""Chance floors (issue 30 item 7): what empty, full and mean-mask predictions score, computed not trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lesionbench.data.layouts import LAYOUTS, TASK2_ATTRIBUTES
from lesionbench.metrics.challenge import PRIMARY, primary_metric
from lesionbench.metrics.chance import (
    as_prediction,
    chance_scores,
    empty_full_stats,
    floors_from_rows,
    floors_from_stats,
    mean_mask,
    metric_names,
    run_floors,
)
from lesionbench.metrics.scores import image_stats, summarize

REPO = Path(__file__).resolve().parents[1]


def _truths(rng: np.random.Generator, n: int, c: int, h: int = 32, w: int = 32) -> torch.Tensor:
    """N×C×H×W ground truths: blobs of any size, some empty and one full (the policies' corners)."""
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, c, h, w), bool)
    for i in range(n):
        for j in range(c):
            r = rng.uniform(0, 20) if rng.random() > 0.3 else 0
            out[i, j] = (yy - rng.uniform(0, h)) ** 2 + (xx - rng.uniform(0, w)) ** 2 < r ** 2
    out[0, 0] = True
    return torch.from_numpy(out)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dataset", ["isic2016", "isic2018", "kvasir-seg", "isic2018-task2"])
def test_counts_floors_equal_scoring_real_empty_and_full_masks(dataset: str) -> None:
    rng = np.random.default_rng(7)
    c = len(LAYOUTS[dataset].class_names)
    truth = _truths(rng, 9, c)
    model = torch.from_numpy(rng.random(truth.shape) < 0.4)  # any prediction's counts carry the truths' totals
    floors = floors_from_stats(image_stats(model, truth), dataset)
    empty, full = image_stats(torch.zeros_like(truth), truth), image_stats(torch.ones_like(truth), truth)
    assert list(floors) == list(metric_names(dataset)) and list(floors)[0] == primary_metric(dataset).name
    assert "dice" in floors
    for name, floor in floors.items():
        assert floor.empty == pytest.approx(PRIMARY[name].value(empty), abs=1e-12), name
        assert floor.full == pytest.approx(PRIMARY[name].value(full), abs=1e-12), name
        assert floor.mean_mask is None
    assert torch.equal(empty_full_stats(image_stats(model, truth))[0], empty)
    assert torch.equal(empty_full_stats(image_stats(model, truth))[1], full)
    # from per_image.csv's columns, as a reader of an old run folder has them
    names = list(LAYOUTS[dataset].class_names)
    _, rows = summarize(image_stats(model, truth), [f"i{k}" for k in range(9)], dataset, names)
    assert floors_from_rows(pd.DataFrame(rows), dataset) == floors
    if dataset == "kvasir-seg":  # a hand check: 8 images with some lesion, one empty truth gets Dice 1 when empty
        fg = truth.flatten(1).any(1)
        assert floors["dice"].empty == pytest.approx(float((~fg).sum()) / 9)


@pytest.mark.timeout(60)
def test_mean_mask_floor_on_a_hand_made_dataset_equals_a_direct_computation() -> None:
    """Three 8×8 training masks; test truths at the network size and at twice it (a 2× bilinear upscale of
    a ±1 map is nearest-neighbour: each output pixel weighs its nearest input 9/16)."""
    train = np.zeros((3, 1, 8, 8), np.uint8)
    train[0, 0, 2:6, 2:6] = 1
    train[1, 0, 1:5, 3:8] = 1
    train[2, 0, 6:, :] = 1
    prior = mean_mask(train.mean(0))
    expected = np.zeros((8, 8), bool)  # covered by at least 2 of the 3 masks
    expected[2:5, 3:6] = True
    assert np.array_equal(prior[0].numpy(), expected)
    assert torch.equal(as_prediction(prior, (8, 8)), prior)
    assert np.array_equal(as_prediction(prior, (16, 16))[0].numpy(), np.kron(expected, np.ones((2, 2), bool)))
    truths = [np.zeros((8, 8), bool), np.zeros((16, 16), bool), np.zeros((8, 8), bool)]
    truths[0][2:6, 2:6] = True
    truths[1][0:8, 4:12] = True
    preds = [expected, np.kron(expected, np.ones((2, 2), bool)), expected]

    def dice(p: np.ndarray, t: np.ndarray) -> float:
        den = p.sum() + t.sum()
        return 2 * (p & t).sum() / den if den else 1.0

    def iou(p: np.ndarray, t: np.ndarray) -> float:
        den = (p | t).sum()
        return (p & t).sum() / den if den else 1.0
    direct_dice = np.mean([dice(p, t) for p, t in zip(preds, truths, strict=True)])
    direct_iou = np.mean([iou(p, t) for p, t in zip(preds, truths, strict=True)])
    assert direct_dice == pytest.approx((2 * 9 / 25 + 2 * 24 / (36 + 64) + 0) / 3)
    stats = torch.cat([image_stats(torch.from_numpy(t)[None, None], torch.from_numpy(t)[None, None]) for t in truths])
    mean_stats = torch.cat([image_stats(as_prediction(prior, t.shape)[None], torch.from_numpy(t)[None, None])
                            for t in truths])
    section = chance_scores(stats, "isic2016", mean_stats, n_train=3)
    assert section.primary == "jaccard" and section.n_train == 3 and list(section.scores) == ["jaccard", "dice"]
    assert section.scores["dice"].mean_mask == pytest.approx(direct_dice, abs=1e-12)
    assert section.scores["jaccard"].mean_mask == pytest.approx(direct_iou, abs=1e-12)
    assert section.scores["dice"].empty == pytest.approx(1 / 3) and section.scores["dice"].full == pytest.approx(
        np.mean([dice(np.ones_like(t), t) for t in truths]))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cache", [True, False])
def test_datamodule_mask_mean_is_the_training_masks_mean_at_network_size(synthetic_env: Path, cache: bool) -> None:
    from lesionbench.config import DatasetConfig
    from lesionbench.data import SegmentationDataModule
    from lesionbench.data.decode import load_mask

    dm = SegmentationDataModule(DatasetConfig(name="isic2018", root=str(synthetic_env), image_size=(24, 40),
                                              cache=cache), batch_size=4)
    dm.setup("fit")
    got = dm.mask_mean("train")
    want = np.mean([np.stack([load_mask(p, 0, (24, 40)) for p in s.masks]) for s in dm.parts["train"]], axis=0)
    assert got.shape == (1, 24, 40) and 0 < got.mean() < 1
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.timeout(60)
def test_chance_section_round_trips_and_old_runs_get_the_count_floors(tmp_path: Path) -> None:
    import shutil

    from lesionbench.runfolder import read_metrics, write_metrics

    old = next(p.parent for p in sorted((REPO / "results" / "kvasir-cpu").glob("*/metrics.json"))
               if '"chance"' not in p.read_text())  # a run made before the floor was computed
    floors = run_floors(old)  # no chance section: derived from per_image.csv
    assert list(floors) == ["dice"] and floors["dice"].mean_mask is None and 0 <= floors["dice"].full < 0.5
    assert floors["dice"].empty == 0.0  # every Kvasir-SEG image has a polyp
    run = tmp_path / "run"
    shutil.copytree(old, run, ignore=shutil.ignore_patterns("predictions", "report", "*.safetensors"))
    metrics = read_metrics(run)
    stats = torch.tensor([[[3, 1, 2, 10]], [[0, 0, 5, 11]]], dtype=torch.float64)
    metrics.chance = chance_scores(stats, "kvasir-seg", stats.flip(-1), n_train=7)
    write_metrics(run, metrics)
    back = read_metrics(run)
    assert back.chance == metrics.chance and run_floors(run) == metrics.chance.scores
    no_mean = metrics.model_copy(update={"chance": chance_scores(stats, "kvasir-seg")})
    write_metrics(run, no_mean)
    assert "mean_mask" not in (run / "metrics.json").read_text()
    assert read_metrics(run).chance.scores["dice"].mean_mask is None


@pytest.mark.timeout(60)
def test_task2_floors_use_the_pooled_metric() -> None:
    stats = torch.zeros(2, len(TASK2_ATTRIBUTES), 4, dtype=torch.float64)
    stats[..., 3] = 100  # every attribute absent: empty scores 1 (0/0), full 0
    stats[0, 0] = torch.tensor([10, 0, 0, 90])
    floors = floors_from_stats(stats, "isic2018-task2")
    assert list(floors) == ["jaccard_pooled_normalised", "dice"]
    assert floors["jaccard_pooled_normalised"].empty == 0.0  # the pooled sum: one attribute present, all missed
    assert floors["jaccard_pooled_normalised"].full == pytest.approx(0.1 / 10)  # tp 0.1 / (0.1 + 9.9 fp)
