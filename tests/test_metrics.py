"""Metrics against an independent numpy computation and hand-computed tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lesionbench.errors import LesionBenchError
from lesionbench.metrics.boundary import boundary_distances, image_boundary
from lesionbench.metrics.challenge import PRIMARY, ValPrimary, primary_metric
from lesionbench.metrics.scores import (
    PerImageStats,
    ValDice,
    image_stats,
    per_image_metrics,
    resize_logits_to,
    stats_from_rows,
    summarize,
)


def np_counts(p: np.ndarray, t: np.ndarray) -> tuple[int, int, int, int]:
    return int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum()), int((~p & ~t).sum())


def np_metrics(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    def r(a: float, b: float) -> float:
        return 1.0 if b == 0 else a / b
    return {"dice": r(2 * tp, 2 * tp + fp + fn), "iou": r(tp, tp + fp + fn), "precision": r(tp, tp + fp),
            "recall": r(tp, tp + fn), "specificity": r(tn, tn + fp), "accuracy": r(tp + tn, tp + fp + fn + tn)}


@pytest.fixture()
def masks() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    pred = rng.random((4, 2, 17, 23)) > 0.6
    target = rng.random((4, 2, 17, 23)) > 0.5
    pred[1, 0] = target[1, 0] = False  # both empty
    pred[2, 1] = False  # empty prediction, non-empty truth
    target[3, 0] = False  # empty truth, non-empty prediction
    return pred, target


def test_image_stats_match_numpy(masks: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = masks
    stats = image_stats(torch.from_numpy(pred), torch.from_numpy(target))
    assert stats.shape == (4, 2, 4) and stats.dtype == torch.float64
    for b in range(4):
        for c in range(2):
            assert tuple(stats[b, c].tolist()) == np_counts(pred[b, c], target[b, c])
    one = image_stats(torch.from_numpy(pred[:1, :1]), torch.from_numpy(target[:1, :1]))
    assert one.shape == (1, 1, 4)  # torchmetrics' squeezing of B == 1 / C == 1 is undone


def test_summarize_matches_numpy_per_image_and_pooled(masks: tuple[np.ndarray, np.ndarray]) -> None:
    pred, target = masks
    stats = image_stats(torch.from_numpy(pred), torch.from_numpy(target))
    metrics, rows = summarize(stats, ["a", "b", "c", "d"], "isic2016", ["x", "y"])
    per = [[np_metrics(*np_counts(pred[b, c], target[b, c])) for c in range(2)] for b in range(4)]
    for key in ("dice", "iou", "precision", "recall", "specificity", "accuracy"):
        want = np.mean([[per[b][c][key] for c in range(2)] for b in range(4)])
        assert metrics["per_image"][key] == pytest.approx(want, abs=1e-6)
        for b, row in enumerate(rows):
            assert row[key] == pytest.approx(np.mean([per[b][c][key] for c in range(2)]), abs=1e-6)
        assert metrics["per_class"]["y"][key] == pytest.approx(np.mean([per[b][1][key] for b in range(4)]), abs=1e-6)
    totals = np.sum([np_counts(pred[b, c], target[b, c]) for b in range(4) for c in range(2)], axis=0)
    for key, want in np_metrics(*totals).items():
        assert metrics["pooled"][key] == pytest.approx(want, abs=1e-6)
    assert rows[1]["x_dice"] == 1.0 and rows[1]["x_iou"] == 1.0  # both empty -> 1
    assert rows[2]["y_dice"] == 0.0 and rows[3]["x_dice"] == 0.0  # one side empty -> 0
    assert per_image_metrics(stats)["precision"][2, 1] == 1.0  # empty prediction: precision freebie
    assert per_image_metrics(stats)["recall"][3, 0] == 1.0  # empty truth: recall freebie
    assert list(rows[0]) == ["id", "dice", "iou", "precision", "recall", "specificity", "accuracy",
                             "x_dice", "x_iou", "y_dice", "y_iou",  # + each channel's counts (the pooled metrics)
                             "x_tp", "x_fp", "x_fn", "x_tn", "y_tp", "y_fp", "y_fn", "y_tn"]
    assert torch.equal(stats_from_rows(pd.DataFrame(rows), ["x", "y"]), stats)
    assert metrics["challenge"]["value"] == pytest.approx(metrics["per_image"]["iou"], abs=1e-12)


def stats_of(*rows: tuple[float, float, float, float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), 1, 4)


def test_thresholded_jaccard_boundary() -> None:
    at = (13, 7, 0, 80)  # Jaccard 13/20 = 0.65 exactly: counts
    below = (1299, 700, 1, 0)  # 1299/2000 = 0.6495: counts 0
    metrics, _ = summarize(stats_of(at, below), ["a", "b"], "isic2018", ["lesion"])
    assert metrics["per_image"]["thresholded_jaccard"] == pytest.approx(0.65 / 2, abs=1e-12)
    assert metrics["challenge"]["metric"] == "thresholded_jaccard"
    assert metrics["challenge"]["value"] == pytest.approx(0.325, abs=1e-12)
    assert metrics["per_image"]["iou"] == pytest.approx((0.65 + 0.6495) / 2, abs=1e-12)
    synthetic, _ = summarize(stats_of(at, below), ["a", "b"], "synthetic", ["lesion"])
    assert synthetic["challenge"]["value"] == pytest.approx(0.325, abs=1e-12)


def test_challenge_by_dataset() -> None:
    stats = stats_of((1, 1, 0, 2), (3, 0, 1, 0))  # iou 1/2, 3/4; dice 2/3, 6/7
    for dataset, metric, value in [("isic2016", "jaccard", 0.625), ("isic2017", "jaccard", 0.625),
                                   ("kvasir-seg", "dice", (2 / 3 + 6 / 7) / 2)]:
        ch = summarize(stats, ["a", "b"], dataset, ["lesion"])[0]["challenge"]
        assert (ch["metric"], set(ch)) == (metric, {"metric", "value", "definition"})
        assert ch["value"] == pytest.approx(value, abs=1e-12)
    with pytest.raises(LesionBenchError, match="no challenge metric"):
        summarize(stats, ["a", "b"], "nope", ["lesion"])


def test_task2_normalisation_weighs_images_equally() -> None:
    names = ["pigment_network", "negative_network", "streaks", "milia_like_cyst", "globules"]
    stats = torch.zeros(2, 5, 4, dtype=torch.float64)
    stats[:, :, 3] = torch.tensor([[100.0], [10000.0]])  # attributes 2-4: both empty everywhere
    stats[0, 0] = torch.tensor([50, 0, 50, 0])  # 10×10 image: half found
    stats[1, 0] = torch.tensor([10000, 0, 0, 0])  # 100×100 image: perfect
    stats[0, 1] = torch.tensor([0, 25, 0, 75])
    stats[1, 1] = torch.tensor([5000, 0, 5000, 0])
    ch = summarize(stats, ["small", "large"], "isic2018-task2", names)[0]["challenge"]
    assert ch["metric"] == "jaccard_pooled_normalised"
    # normalised sums: attr0 tp 1.5 fn 0.5; attr1 tp 0.5 fp 0.25 fn 0.5 (unnormalised attr0 would be 0.995)
    assert ch["per_attribute"]["pigment_network"]["jaccard"] == pytest.approx(0.75, abs=1e-12)
    assert ch["per_attribute"]["pigment_network"]["dice"] == pytest.approx(6 / 7, abs=1e-12)
    assert ch["per_attribute"]["negative_network"]["jaccard"] == pytest.approx(0.4, abs=1e-12)
    assert ch["per_attribute"]["negative_network"]["dice"] == pytest.approx(4 / 7, abs=1e-12)
    assert ch["per_attribute"]["streaks"]["jaccard"] == 1.0  # empty in truth and prediction
    assert ch["value"] == pytest.approx(2.0 / 3.25, abs=1e-12)


def test_per_image_stats_deduplicates_ddp_padding() -> None:
    m = PerImageStats()
    s = torch.arange(3 * 1 * 4, dtype=torch.float64).reshape(3, 1, 4)
    m.update(s[[2, 0]], torch.tensor([2, 0]))
    m.update(s[[1, 2]], torch.tensor([1, 2]))  # index 2 again: a padded duplicate
    index, stats = m.compute()
    assert index.tolist() == [0, 1, 2]
    assert torch.equal(stats, s)
    m.reset()
    assert m.compute()[0].numel() == 0


def test_val_dice_is_the_mean_per_image_dice() -> None:
    t = torch.zeros(3, 1, 2, 2, dtype=torch.bool)
    p = torch.zeros_like(t)
    t[0, 0, 0] = p[0, 0, 0] = True  # image 0 perfect -> 1; image 1 both empty -> 1
    t[2, 0, 0, 0] = True
    p[2, 0, 0] = True  # image 2: tp 1, fp 1 -> dice 2/3
    m = ValDice()
    m.update(p[:2], t[:2])
    m.update(p[2:].float(), t[2:].float())
    assert m.compute().item() == pytest.approx((1 + 1 + 2 / 3) / 3, abs=1e-6)
    iou = ValDice(metric="iou")
    iou.update(p, t)
    assert iou.compute().item() == pytest.approx((1 + 1 + 0.5) / 3, abs=1e-6)


def test_resize_logits_to() -> None:
    x = torch.arange(4.0).reshape(1, 1, 2, 2)
    assert resize_logits_to(x, (2, 2)) is x
    y = resize_logits_to(x, (4, 6))
    assert y.shape == (1, 1, 4, 6) and y[0, 0, 0, 0].item() == 0.0 and y[0, 0, -1, -1].item() == 3.0


def test_each_dataset_declares_the_organisers_metric() -> None:
    want = {"isic2016": "jaccard", "isic2017": "jaccard", "isic2018": "thresholded_jaccard",
            "isic2018-task2": "jaccard_pooled_normalised", "kvasir-seg": "dice", "synthetic": "thresholded_jaccard"}
    assert {d: primary_metric(d).name for d in want} == want
    assert PRIMARY["jaccard_pooled_normalised"].pooled and not PRIMARY["dice"].pooled


def test_val_primary_on_task2_scores_a_blank_model_zero() -> None:
    """Per-image Dice calls an empty-vs-empty attribute perfect; the pooled Jaccard does not reward silence."""
    target = torch.zeros(4, 5, 8, 8, dtype=torch.bool)
    target[:, 0, 2:6, 2:6] = True  # one attribute present per image, four absent
    blank, half = torch.zeros_like(target), target.clone()
    half[:, 0, 2:4] = False  # finds half of each lesion (8 px, misses 8)
    half[:, 1, 0, :4] = True  # and marks 4 px of an absent attribute
    scores = {}
    for name, pred in [("blank", blank), ("half", half)]:
        m = ValPrimary("isic2018-task2")
        m.update(image_stats(pred[:2], target[:2]))
        m.update(image_stats(pred[2:], target[2:]))
        scores[name] = m.compute().item()
        dice = ValDice()
        dice.update(pred, target)
        scores[name + "_dice"] = dice.compute().item()
    assert scores["blank"] == 0.0 and scores["half"] == pytest.approx(8 / (8 + 8 + 4))
    assert scores["blank_dice"] == pytest.approx(0.8) and scores["half_dice"] < 0.8  # why Dice ranked it first


def test_boundary_distances_on_hand_made_masks() -> None:
    def mask(*pixels: tuple[int, int], shape: tuple[int, int] = (6, 12)) -> torch.Tensor:
        m = torch.zeros(shape, dtype=torch.bool)
        for r, c in pixels:
            m[r, c] = True
        return m
    assert boundary_distances(mask((0, 0)), mask((3, 4))) == (5.0, 5.0)  # one pixel each, 3-4-5 apart
    line_a, line_b = torch.zeros(8, 10, dtype=torch.bool), torch.zeros(8, 10, dtype=torch.bool)
    line_a[2], line_b[6] = True, True
    assert boundary_distances(line_a, line_b) == (4.0, 4.0)
    # prediction (0,0) and (0,10); truth (0,0): directed distances [0, 10] and [0]
    hd95, assd = boundary_distances(mask((0, 0), (0, 10)), mask((0, 0)))
    assert hd95 == pytest.approx(9.5) and assd == pytest.approx(10 / 3)
    square = torch.zeros(20, 20, dtype=torch.bool)
    square[5:15, 5:15] = True
    assert boundary_distances(square, square) == (0.0, 0.0)
    assert boundary_distances(mask(), mask()) == (0.0, 0.0)  # both empty
    assert boundary_distances(mask((1, 1)), mask()) == (math.hypot(6, 12),) * 2  # one empty: the diagonal
    both = image_boundary(torch.stack([mask((0, 0))[None], mask()[None]]), torch.stack([mask((3, 4))[None]] * 2))
    assert both.shape == (2, 1, 2) and both[0, 0].tolist() == [5.0, 5.0] and both[1, 0, 0] == math.hypot(6, 12)


def test_summarize_reports_boundary_metrics() -> None:
    stats = stats_of((1, 1, 0, 2), (3, 0, 1, 0))
    boundary = torch.tensor([[[2.0, 1.0]], [[4.0, 3.0]]], dtype=torch.float64)
    metrics, rows = summarize(stats, ["a", "b"], "kvasir-seg", ["polyp"], boundary=boundary)
    assert metrics["per_image"]["hd95"] == 3.0 and metrics["per_image"]["assd"] == 2.0
    assert metrics["per_class"]["polyp"]["hd95"] == 3.0
    assert rows[1]["hd95"] == 4.0 and rows[1]["assd"] == 3.0 and rows[1]["tp"] == 3 and rows[1]["fn"] == 1


@pytest.mark.slow
def test_training_selects_and_records_the_primary_metric(synthetic_env, tmp_path) -> None:
    """Task 2 trains, selects its checkpoint and reports on the pooled Jaccard, not on per-image Dice."""
    from lesionbench.config import ExperimentConfig
    from lesionbench.io import read_json
    from lesionbench.training.run import train
    from lesionbench.training.task import selection_monitor
    from lesionbench.training.trainer import build_trainer

    data = {"name": "t2", "dataset": {"name": "isic2018-task2", "root": str(synthetic_env), "image_size": 32},
            "model": {"name": "unet", "options": {"base_channels": 8}},
            "trainer": {"epochs": 2, "batch_size": 4, "accelerator": "cpu", "devices": 1}}
    cfg = ExperimentConfig.model_validate(data)
    train(cfg, tmp_path / "run", progress=False)
    log = pd.read_csv(tmp_path / "run" / "logs" / "metrics.csv").dropna(subset=["val/primary"])
    assert len(log) == 2 and (log["val/primary"] == log["val/jaccard_pooled_normalised"]).all()
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["best_val"]["val/primary"] == pytest.approx(log["val/primary"].max(), abs=1e-6)
    assert metrics["challenge"]["metric"] == "jaccard_pooled_normalised"
    assert {"hd95", "assd"} <= set(metrics["per_image"]) and metrics["per_image"]["hd95"] >= 0
    rows = pd.read_csv(tmp_path / "run" / "per_image.csv")
    assert len(rows) == metrics["n_test"] and rows["hd95"].notna().all() and "globules_tp" in rows
    # what the recipe names wins: early stopping on val/dice also selects checkpoints on it
    named = ExperimentConfig.model_validate({**data, "early_stopping": {"monitor": "val/dice", "patience": 3}})
    phase = named.resolved_phases()[0]
    assert selection_monitor(cfg, cfg.resolved_phases()[0]) == ("val/primary", "max")
    assert build_trainer(named, phase, tmp_path / "p", tmp_path, [], progress=False)[1].monitor == "val/dice"
