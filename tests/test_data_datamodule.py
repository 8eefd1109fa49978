"""SegmentationDataModule on synthetic replicas: every dataset, every split, two sizes; cache."""

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lesionbench.config import DatasetConfig, ExperimentConfig
from lesionbench.data import SegmentationDataModule, resolve_root
from lesionbench.data.synthetic import write_all
from lesionbench.errors import LesionBenchError

COUNTS = {"isic2016": {"train": 10, "test": 4}, "isic2017": {"train": 6, "val": 3, "test": 4},
          "isic2018": {"train": 8, "val": 3, "test": 4}, "kvasir-seg": {"all": 20}}
EXPECTED = {  # (train, val, test) ids after the official split
    "isic2016": (9, 1, 4), "isic2017": (6, 3, 4), "isic2018": (8, 3, 4), "isic2018-task2": (8, 3, 4),
    "kvasir-seg": (18, 1, 1), "synthetic": (8, 3, 4),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_all(tmp_path_factory.mktemp("syn"), seed=3, counts=COUNTS, size=(40, 80))


def _dm(root: Path, name: str, **kw) -> SegmentationDataModule:
    cfg = DatasetConfig(name=name, root=str(root), **{"image_size": 32, **kw})
    dm = SegmentationDataModule(cfg, batch_size=4, num_classes=5 if name == "isic2018-task2" else 1)
    dm.setup()
    return dm


@pytest.mark.parametrize("size", [32, 48, (24, 40)])  # (H, W): paper 004's 767×1022 in small
@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_dataset_every_split(root: Path, name: str, size: int | tuple[int, int]) -> None:
    dm = _dm(root, name, image_size=size, augmentation="paper002")
    h, w = (size, size) if isinstance(size, int) else size
    assert (len(dm.train_ids), len(dm.val_ids), len(dm.test_ids)) == EXPECTED[name]
    c = 5 if name == "isic2018-task2" else 1
    assert dm.num_classes == c and len(dm.class_names) == c
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        b = next(iter(loader))
        n = len(b["id"])
        assert b["image"].shape == (n, 3, h, w) and b["image"].dtype == torch.float32
        assert b["mask"].shape == (n, c, h, w) and set(b["mask"].unique().tolist()) <= {0.0, 1.0}
        assert b["index"].dtype == torch.int64
    tb = next(iter(dm.test_dataloader()))
    assert tb["index"].tolist() == list(range(len(tb["id"]))) and tb["id"] == dm.test_ids[: len(tb["id"])]
    s = dm.parts["test"][0]
    w, h = Image.open(s.image).size
    assert tb["orig_mask"][0].shape == (c, h, w) and tb["orig_mask"][0].dtype == torch.uint8
    ref = (np.asarray(Image.open(s.masks[0]).convert("L")) > dm.layout.mask_threshold)
    assert torch.equal(tb["orig_mask"][0][0], torch.from_numpy(ref.astype(np.uint8)))


def test_cache_equals_decoding_and_subset(root: Path) -> None:
    a, b = _dm(root, "isic2018", subset=3), _dm(root, "isic2018", subset=3, cache=False)
    assert len(a.train_ids) == 3 and a.train_ids == b.train_ids == _dm(root, "isic2018").train_ids[:3]
    ba, bb = next(iter(a.val_dataloader())), next(iter(b.val_dataloader()))
    assert torch.equal(ba["image"], bb["image"]) and torch.equal(ba["mask"], bb["mask"])


def test_non_square_cache_is_keyed_by_both_sides(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESIONBENCH_WORKDIR", str(tmp_path / "work"))
    wide, tall = _dm(root, "isic2018", image_size=[24, 40]), _dm(root, "isic2018", image_size=[40, 24])
    folders = sorted(p.name.split("-")[-2] for p in (wide.work / "cache").glob("isic2018-*-train-*"))
    assert folders == ["24x40px", "40x24px"], folders
    assert next(iter(wide.val_dataloader()))["image"].shape[-2:] == (24, 40)
    assert next(iter(tall.val_dataloader()))["image"].shape[-2:] == (40, 24)


def test_cache_rebuilt_when_source_changes(root: Path, tmp_path: Path) -> None:
    import shutil
    r = tmp_path / "isic2017"
    shutil.copytree(root / "isic2017", r)
    dm = _dm(r, "isic2017")
    h0, folder = dm.manifest_hash, dm._datasets["val"].cache
    assert _dm(r, "isic2017")._datasets["val"].cache == folder  # reused, not rebuilt
    s = dm.parts["val"][0]
    mask = np.zeros_like(np.asarray(Image.open(s.masks[0])))
    Image.fromarray(mask).save(s.masks[0])
    os.utime(s.masks[0], ns=(time.time_ns() + 10**9,) * 2)
    dm2 = _dm(r, "isic2017")
    assert dm2.manifest_hash != h0 and dm2._datasets["val"].cache != folder
    assert not folder.exists()  # the stale cache was removed
    assert float(dm2._datasets["val"][0]["mask"].sum()) == 0.0
    assert not list(folder.parent.glob(".*"))  # no temporary folder left behind


def test_leakage_across_editions(root: Path) -> None:
    train18 = _dm(root, "isic2018")
    leaks = train18.check_cross_dataset(_dm(root, "isic2017"))
    assert sorted(x.train_id for x in leaks) == ["ISIC_0009000", "ISIC_0009001", "ISIC_0009002", "ISIC_0009003"]
    ex = _dm(root, "isic2018", leakage="exclude")
    ex.check_cross_dataset(_dm(root, "isic2017"))
    assert len(ex.train_ids) == 4 and not any(i.startswith("ISIC_00090") for i in ex.train_ids)
    assert len(ex._datasets["train"]) == 4


def test_from_experiment_and_errors(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp = ExperimentConfig(dataset=DatasetConfig(name="isic2018-task2", root=str(root), image_size=32))
    dm = SegmentationDataModule.from_experiment(exp)
    dm.setup()
    assert dm.num_classes == 5 and dm.class_names[3] == "pigment_network"
    assert resolve_root("isic2017", str(root)) == root / "isic2017"
    monkeypatch.delenv("LESIONBENCH_DATA", raising=False)
    with pytest.raises(LesionBenchError, match="LESIONBENCH_DATA"):
        resolve_root("isic2016", None)
    with pytest.raises(LesionBenchError, match="call setup"):
        _ = SegmentationDataModule(DatasetConfig(), batch_size=2).train_ids
