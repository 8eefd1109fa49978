"""Losses against hand-computed values on 2×2 tensors (p = sigmoid(logit) in {0.75, 0.25, 0.5})."""

from __future__ import annotations

import math

import pytest
import torch

from lesionbench.config import LossConfig, LossTerm
from lesionbench.errors import LesionBenchError
from lesionbench.training.losses import build_loss

L3 = math.log(3.0)
# p = [[0.75, 0.25], [0.5, 0.5]] against target [[1, 0], [1, 1]]
LOGITS = torch.tensor([[[[L3, -L3], [0.0, 0.0]]]])
TARGET = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
# soft counts: tp = 1.75, fp = 0.25, fn = 1.25
BCE = (2 * math.log(4 / 3) + 2 * math.log(2)) / 4
DICE = 1 - 3.5 / 5.0
JACCARD = 1 - 1.75 / 3.25
TVERSKY = 1 - 1.75 / (1.75 + 0.3 * 0.25 + 0.7 * 1.25)  # alpha on FP, beta on FN
# per pixel alpha_t * (1 - p_t)^2 * -log p_t, alpha_t = 0.8 for y=1, 0.2 for y=0
FOCAL = (0.8 / 16 * math.log(4 / 3) + 0.2 / 16 * math.log(4 / 3) + 2 * 0.8 / 4 * math.log(2)) / 4


def loss_of(*terms: LossTerm, ds: list[float] | None = None, default: list[float] | None = None):
    return build_loss(LossConfig(terms=list(terms), deep_supervision_weights=ds), default)


@pytest.mark.parametrize("term, expected", [
    (LossTerm(name="bce"), BCE),
    (LossTerm(name="dice"), DICE),
    (LossTerm(name="jaccard"), JACCARD),
    (LossTerm(name="tversky", options={"alpha": 0.3, "beta": 0.7}), TVERSKY),
    (LossTerm(name="focal", options={"alpha": 0.8, "gamma": 2}), FOCAL),
])
def test_each_loss_hand_computed(term: LossTerm, expected: float) -> None:
    assert loss_of(term)(LOGITS, TARGET).item() == pytest.approx(expected, abs=1e-6)


def test_tversky_alpha_beta_are_not_swapped() -> None:
    swapped = loss_of(LossTerm(name="tversky", options={"alpha": 0.7, "beta": 0.3}))(LOGITS, TARGET).item()
    assert swapped == pytest.approx(1 - 1.75 / 2.3, abs=1e-6)
    assert swapped < TVERSKY  # FN-heavy prediction costs more when beta (FN) is larger


def test_weighted_sums_of_the_seeds() -> None:
    default = build_loss(LossConfig(), None)  # paper 000/001: BCE + Dice
    assert default(LOGITS, TARGET).item() == pytest.approx(BCE + DICE, abs=1e-6)
    paper002 = loss_of(LossTerm(name="focal", weight=0.5, options={"alpha": 0.8, "gamma": 2}),
                      LossTerm(name="tversky", weight=0.5, options={"alpha": 0.3, "beta": 0.7}))
    assert paper002(LOGITS, TARGET).item() == pytest.approx(0.5 * FOCAL + 0.5 * TVERSKY, abs=1e-6)
    paper004 = loss_of(LossTerm(name="bce", weight=0.8), LossTerm(name="dice", weight=0.2))
    assert paper004(LOGITS, TARGET).item() == pytest.approx(0.8 * BCE + 0.2 * DICE, abs=1e-6)


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky"])
def test_empty_masks_give_zero_for_dice_like(name: str) -> None:
    empty = torch.zeros(1, 1, 2, 2)
    loss = loss_of(LossTerm(name=name))
    assert loss(torch.full((1, 1, 2, 2), -20.0), empty).item() == 0.0  # both empty
    assert loss(torch.full((1, 1, 2, 2), 20.0), empty).item() == 0.0  # smp rule: empty GT channel -> 0


def test_empty_masks_pixelwise_terms() -> None:
    empty = torch.zeros(1, 1, 2, 2)
    bce = loss_of(LossTerm(name="bce"))
    assert bce(torch.full((1, 1, 2, 2), -20.0), empty).item() == pytest.approx(0.0, abs=1e-8)
    assert bce(torch.zeros(1, 1, 2, 2), empty).item() == pytest.approx(math.log(2), abs=1e-6)


def test_multilabel_mean_over_channels() -> None:
    logits = torch.cat([LOGITS, torch.full_like(LOGITS, -20.0)], dim=1)  # channel 1: both empty
    target = torch.cat([TARGET, torch.zeros_like(TARGET)], dim=1)
    assert loss_of(LossTerm(name="dice"))(logits, target).item() == pytest.approx(DICE / 2, abs=1e-6)
    bce = loss_of(LossTerm(name="bce"))(logits, target).item()
    assert bce == pytest.approx(BCE / 2, abs=1e-6)


def test_deep_supervision_two_heads_of_different_sizes() -> None:
    coarse = torch.full((1, 1, 1, 1), L3)  # bilinear to 2×2: p = 0.75 everywhere
    coarse_bce = (3 * math.log(4 / 3) + math.log(4)) / 4
    coarse_dice = 1 - 4.5 / 6.0  # tp = 2.25, sum p = 3, sum t = 3
    heads = [coarse, LOGITS]
    from_cfg = loss_of(LossTerm(name="bce"), LossTerm(name="dice"), ds=[0.25, 0.75], default=[0.9, 0.1])
    expected = 0.25 * (coarse_bce + coarse_dice) + 0.75 * (BCE + DICE)
    assert from_cfg(heads, TARGET).item() == pytest.approx(expected, abs=1e-6)
    from_model = loss_of(LossTerm(name="bce"), LossTerm(name="dice"), default=[0.25, 0.75])
    assert from_model(heads, TARGET).item() == pytest.approx(expected, abs=1e-6)
    equal = loss_of(LossTerm(name="bce"), LossTerm(name="dice"))
    assert equal(heads, TARGET).item() == pytest.approx(0.5 * (coarse_bce + coarse_dice + BCE + DICE), abs=1e-6)
    # a single tensor (eval mode) ignores the per-head weights
    assert from_cfg(LOGITS, TARGET).item() == pytest.approx(BCE + DICE, abs=1e-6)


def test_gradient_flows_through_all_heads() -> None:
    heads = [torch.zeros(1, 1, 1, 1, requires_grad=True), torch.zeros(1, 1, 2, 2, requires_grad=True)]
    loss_of(LossTerm(name="bce"), LossTerm(name="dice"))(heads, TARGET).backward()
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in heads)


def test_bad_options_and_shapes_are_clear_errors() -> None:
    with pytest.raises(LesionBenchError, match=r"loss.terms\[0\].options.alfa.*allowed: alpha, gamma"):
        loss_of(LossTerm(name="focal", options={"alfa": 0.8}))
    with pytest.raises(LesionBenchError, match="deep_supervision_weights: 3 weight"):
        loss_of(LossTerm(name="bce"), ds=[0.2, 0.3, 0.5])([LOGITS, LOGITS], TARGET)
    with pytest.raises(LesionBenchError, match="num_classes"):
        loss_of(LossTerm(name="bce"))(torch.zeros(1, 2, 2, 2), TARGET)
