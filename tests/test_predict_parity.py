"""``predict`` scores exactly what the test loop scored: same input tensor, same resize back (issue 16.2)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lesionbench.config import ExperimentConfig


@pytest.fixture(scope="module", params=[("imagenet", 32), ("dataset", 32), ("imagenet", [32, 48])],
                ids=["imagenet", "dataset", "imagenet-32x48"])
def tiny_run(request: pytest.FixtureRequest, tiny_synthetic: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real one-epoch training at 32 px, or at a non-square 32×48 as paper 004's 767×1022 (images
    are 48-72 px JPEGs, so resizing matters); the high learning rate gives non-trivial masks, so a
    different resize changes the per-image scores."""
    from lesionbench.training.run import train
    tmp = tmp_path_factory.mktemp("parity")
    normalize, size = request.param
    cfg = ExperimentConfig.model_validate({
        "name": "parity", "dataset": {"name": "synthetic", "image_size": size, "augmentation": "none",
                                              "normalize": normalize},  # paper 003: its training split's stats
        "model": {"name": "unet", "options": {"base_channels": 8}}, "optimizer": {"lr": 0.02},
        "trainer": {"epochs": 1, "batch_size": 4, "accelerator": "cpu", "devices": 1}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
        mp.setenv("LESIONBENCH_WORKDIR", str(tmp / "work"))
        train(cfg, tmp / "run", suite="t", progress=False)
        yield tmp / "run", tmp / "work"


def _test_samples(run: Path, work: Path, tiny_synthetic: Path) -> tuple[list, object]:
    from lesionbench.data import SegmentationDataModule
    from lesionbench.inference.load import load_run
    _, cfg = load_run(run)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
        mp.setenv("LESIONBENCH_WORKDIR", str(work))
        dm = SegmentationDataModule.from_experiment(cfg)
        dm.setup("test")
    return dm.parts["test"], dm


def test_model_input_is_the_test_batch_item(tiny_run: tuple[Path, Path], tiny_synthetic: Path) -> None:
    from lesionbench.data.preprocess import model_input
    from lesionbench.inference.load import load_run, run_stats
    run, work = tiny_run
    samples, dm = _test_samples(run, work, tiny_synthetic)
    loader_items = dm.test_dataloader().dataset
    stats = run_stats(load_run(run)[0].model)  # recorded in metrics.json by the run
    assert stats == (tuple(dm.mean), tuple(dm.std))
    size_in = load_run(run)[1].dataset.image_size
    for i, s in enumerate(samples):
        x, size = model_input(s.image, size_in, "none", stats)
        assert x.shape[-2:] == ((32, 32) if size_in == 32 else (32, 48))
        assert torch.equal(x, loader_items[i]["image"]), s.id
        assert size == tuple(loader_items[i]["orig_mask"].shape[-2:])


def test_predict_reproduces_per_image_csv(tiny_run: tuple[Path, Path], tiny_synthetic: Path, tmp_path: Path) -> None:
    from lesionbench.data.decode import load_mask
    from lesionbench.inference.predict import predict_files
    from lesionbench.metrics.scores import image_stats, per_image_metrics
    run, work = tiny_run
    samples, _ = _test_samples(run, work, tiny_synthetic)
    predict_files(run, [s.image for s in samples], tmp_path / "sub", fmt="isic")
    with open(run / "per_image.csv") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == sorted(s.id for s in samples)
    assert len({r["dice"] for r in rows.values()}) > 2  # not all-empty predictions: the check has teeth
    for s in samples:
        pred = np.asarray(Image.open(tmp_path / "sub" / f"{s.image.stem}_segmentation.png")) > 127
        gt = load_mask(s.masks[0], 0)
        stats = image_stats(torch.from_numpy(pred)[None, None], torch.from_numpy(gt.astype(bool))[None, None])
        for name, value in per_image_metrics(stats).items():
            assert float(value) == pytest.approx(float(rows[s.id][name]), abs=1e-6), (s.id, name)
