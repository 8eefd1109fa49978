"""Paper recipes follow their write-ups: outputs, regimes, exact weights, FCT targets, splits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lesionbench.config import LossConfig, LossTerm, load_config
from lesionbench.data.layouts import Sample
from lesionbench.data.splits import hash_order, make_split
from lesionbench.errors import LesionBenchError
from lesionbench.models import create_model
from lesionbench.models.pretrained import weights_id
from lesionbench.training.losses import build_loss

EXP = Path(__file__).resolve().parents[1] / "experiments"
KVASIR = EXP / "splits" / "kvasir-seg"


def test_unetplusplus_seed_recipe_trains_one_output() -> None:
    cfg = load_config(EXP / "isic2017_unetplusplus.yaml")
    model = create_model(cfg.model.name, **{**cfg.model.options, "base_channels": 4}).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 32, 32)
    assert model.deep_supervision_weights is None
    ds = create_model("unetplusplus", base_channels=4, deep_supervision=True).train()
    assert len(ds(torch.randn(2, 3, 32, 32))) == 4  # still an option for other recipes


def test_mobilenet_all_layers_starts_from_the_frozen_model() -> None:
    phases = load_config(EXP / "isic2016_mobilenet_full.yaml").resolved_phases()
    assert [p.name for p in phases] == ["frozen", "all-layers"]
    assert phases[0].freeze == ["encoder"] and phases[1].freeze == []
    assert phases[1].lr == pytest.approx(1e-4)


@pytest.mark.parametrize(("recipe", "expected"), [
    ("isic2018_fct_resnet50", "torchvision:ResNet50_Weights.IMAGENET1K_V1"),
    ("kvasir_resnet50_unet", "torchvision:ResNet50_Weights.IMAGENET1K_V1"),
    ("isic2016_mobilenet_frozen", "torchvision:MobileNet_V2_Weights.IMAGENET1K_V1"),
    ("isic2018_task2_convnext", "timm:convnext_tiny.fb_in1k"),
    ("isic2017_unet", "none"),
])
def test_seed_recipes_name_their_weights_exactly(recipe: str, expected: str) -> None:
    cfg = load_config(EXP / f"{recipe}.yaml")
    assert weights_id(cfg.model.name, cfg.model.options) == expected


def test_imagenet_alias_is_the_original_generation_and_tags_are_checked() -> None:
    assert weights_id("resnet50-unet", {"weights": "imagenet"}).endswith("IMAGENET1K_V1")  # not DEFAULT=V2
    assert weights_id("unet-convnext-attention", {"weights": "imagenet"}) == "timm:convnext_tiny.fb_in1k"
    assert weights_id("resnet50-unet", {"weights": "IMAGENET1K_V2"}).endswith("IMAGENET1K_V2")
    assert weights_id("smp:Unet/resnet34", {"weights": "imagenet"}) == "smp:resnet34.imagenet"
    assert weights_id("resnet50-unet", {"weights": "none"}) == "none"
    with pytest.raises(LesionBenchError, match="IMAGENET1K_V1"):
        weights_id("fct-resnet50", {"weights": "IMAGENET1K_V9"})
    model = create_model("test-resnet-unet", weights="none")
    assert model.weights_id == "none" and create_model("unet", base_channels=4).weights_id == "none"


def test_fct_coarse_heads_train_against_downsampled_masks() -> None:
    model = create_model("test-fct-resnet").train()
    heads = model(torch.randn(2, 3, 64, 64))
    assert [h.shape[-1] for h in heads] == [16, 32, 64]
    assert model.deep_supervision_downsample_masks
    target = torch.zeros(1, 1, 4, 4)
    target[..., 1::2, 1::2] = 1  # every other pixel: the FCT subsample y[::2, ::2] is all zeros
    coarse, fine = torch.full((1, 1, 2, 2), -20.0), torch.full((1, 1, 4, 4), 0.0)
    cfg = LossConfig(terms=[LossTerm(name="bce")], deep_supervision_weights=[1.0, 0.0])
    down = build_loss(cfg, downsample_masks=True)([coarse, fine], target)
    up = build_loss(cfg)([coarse, fine], target)
    assert down.item() < 1e-6 < 1.0 < up.item()


def _kvasir_pool() -> list[Sample]:
    ids = [*KVASIR.joinpath("train.txt").read_text().split(), *KVASIR.joinpath("val.txt").read_text().split()]
    return [Sample(i, Path(f"/k/{i}.jpg"), ()) for i in ids]


def test_kvasir_paper002_is_the_official_880_and_halved_120() -> None:
    split = make_split("kvasir-seg", "paper002", {"all": _kvasir_pool()})
    official_train = set(KVASIR.joinpath("train.txt").read_text().split())
    held = set(KVASIR.joinpath("val.txt").read_text().split())
    assert set(split["train"]) == official_train and len(split["train"]) == 880
    assert len(split["val"]) == len(split["test"]) == 60 and set(split["val"]) | set(split["test"]) == held
    assert split == make_split("kvasir-seg", "official", {"all": _kvasir_pool()[::-1]})


def test_kvasir_incomplete_official_set_is_one_clear_error() -> None:
    with pytest.raises(LesionBenchError, match="of the 1000 ids of the official split"):
        make_split("kvasir-seg", "paper002", {"all": _kvasir_pool()[:-3]})


def test_carved_splits_are_hash_ordered_not_library_random() -> None:
    # pinned: any change of algorithm (or a numpy/random version) would move these ids
    assert hash_order([f"id{i}" for i in range(6)], "42:x") == ["id4", "id0", "id1", "id5", "id2", "id3"]
    pool = {"train": [Sample(f"ISIC_{i:07d}", Path("/x.jpg"), ()) for i in range(20)],
            "val": [], "test": [Sample("ISIC_9999999", Path("/t.jpg"), ())]}
    assert make_split("isic2018", "paper000", pool)["test"] == ["ISIC_0000007", "ISIC_0000012", "ISIC_0000015"]


def test_paper003_normalises_with_the_training_split_stats(synthetic_env: Path) -> None:
    import numpy as np

    from lesionbench.config import DatasetConfig
    from lesionbench.data.datamodule import SegmentationDataModule
    from lesionbench.data.decode import load_pair
    from lesionbench.data.stats import channel_stats
    assert load_config(EXP / "isic2018_task2_convnext.yaml").dataset.normalize == "dataset"
    cfg = DatasetConfig(name="isic2018-task2", root=str(synthetic_env / "isic2018"), image_size=32,
                        normalize="dataset")
    dm = SegmentationDataModule(cfg, batch_size=2, num_classes=5)
    dm.setup()
    train = dm.parts["train"]
    images = np.stack([load_pair(s, dm.layout.mask_threshold, 32)[0] for s in train])
    assert np.allclose(dm.mean, channel_stats(images)[0]) and np.allclose(dm.std, channel_stats(images)[1])
    assert not np.allclose(dm.mean, (0.485, 0.456, 0.406), atol=1e-3)
    eval_tf = dm._datasets["val"].transform  # val/test use the training statistics
    x = torch.stack([eval_tf(image=im)["image"].float() for im in images])
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-3)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-2)
    img = np.full((4, 4, 4, 3), (10, 20, 30), np.uint8)
    m, sd = channel_stats(img)
    assert np.allclose(m, (10 / 255, 20 / 255, 30 / 255)) and np.allclose(sd, 0, atol=1e-5)


def test_init_reaches_encoders_trained_from_scratch() -> None:
    from lesionbench.training.optim import init_weights
    torch.manual_seed(0)
    scratch = create_model("unet", base_channels=4)
    init_weights(scratch.init_modules(), "normal")
    assert scratch.encoder.stage1 in [m for r in scratch.init_modules() for m in r.modules()]
    assert scratch.encoder.stage1[0].weight.std().item() == pytest.approx(0.02, rel=0.3)
    pretrained = create_model("test-resnet-unet", weights="none")
    pretrained.weights_id = "torchvision:ResNet18_Weights.IMAGENET1K_V1"  # as if loaded
    assert all(m is not pretrained.encoder for m in pretrained.init_modules())


@pytest.mark.parametrize("name", ["unet", "unetplusplus", "pspnet", "test-fct-resnet", "test-resnet-unet"])
def test_any_input_size_is_padded_and_cropped_back(name: str) -> None:
    """Paper 004 trained at 767×1022 (not a multiple of 16 or 32): the output keeps the input size,
    and (full-resolution heads) equals the run on the zero-padded input, cropped."""
    small = {"unet": {"base_channels": 4}, "unetplusplus": {"base_channels": 4}, "pspnet": {"backbone_features": 16}}
    torch.manual_seed(0)
    model = create_model(name, **small.get(name, {})).eval()
    x = torch.randn(1, 3, 47, 61)  # 767×1022 in miniature: odd, not a multiple of anything
    with torch.no_grad():
        y = model(x)
        m = model.size_multiple
        padded = torch.nn.functional.pad(x, (0, -61 % m, 0, -47 % m))
        ref = model(padded)[..., :47, :61]
    assert y.shape == (1, 1, 47, 61) and torch.isfinite(y).all()
    if name != "pspnet":  # PSPNet's logits are at /4 and upsampled: cropped at /4, then resized
        assert torch.allclose(y, ref, atol=1e-5)
    model.train()
    out = model(x.repeat(2, 1, 1, 1))  # batch 2: PSPNet's 1x1 pooled BatchNorm in train mode
    assert (out[-1] if isinstance(out, list) else out).shape == (2, 1, 47, 61)
