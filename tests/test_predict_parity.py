"""``predict`` scores exactly what the test loop scored: same input tensor, same batches, same resize back
(issues 16.2 and 24.2)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from runs import center_logits

from lesionbench.config import ExperimentConfig


@pytest.fixture(scope="module", params=[("imagenet", 32, {}), ("dataset", 32, {}), ("imagenet", [32, 48], {}),
                                        ("imagenet", 32, {"precision": "bf16-mixed", "channels_last": True})],
                ids=["imagenet", "dataset", "imagenet-32x48", "bf16-channels-last"])
def tiny_run(request: pytest.FixtureRequest, tiny_synthetic: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real one-epoch training at 32 px, or at a non-square 32×48 as paper 004's 767×1022 (images
    are 48-72 px JPEGs, so resizing matters). The last trains (and tests) in bfloat16 autocast with
    channels-last tensors: predict must run the network as the test loop did. Whatever the training
    learned on this CPU (bf16 arithmetic differs between CPUs; one AMD EPYC left every bf16 mask empty),
    the head's bias is centred on the test logits before the test loop (runs.center_logits), so the
    masks are non-trivial by construction and a different resize or precision changes the scores."""
    from lesionbench.training.run import train
    tmp = tmp_path_factory.mktemp("parity")
    normalize, size, hardware = request.param
    cfg = ExperimentConfig.model_validate({
        "name": "parity", "dataset": {"name": "synthetic", "image_size": size, "augmentation": "none",
                                              "normalize": normalize},  # paper 003: its training split's stats
        "model": {"name": "unet", "options": {"base_channels": 8}}, "optimizer": {"lr": 0.02},
        "trainer": {"epochs": 1, "batch_size": 4, "accelerator": "cpu", "devices": 1, **hardware}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
        mp.setenv("LESIONBENCH_WORKDIR", str(tmp / "work"))
        train(cfg, tmp / "run", suite="t", callbacks=[center_logits()], progress=False)
        yield tmp / "run", tmp / "work"


def _test_samples(run: Path, work: Path, tiny_synthetic: Path) -> tuple[list, object]:
    from lesionbench.data import SegmentationDataModule
    from lesionbench.inference.load import load_run
    cfg = load_run(run).cfg
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
        mp.setenv("LESIONBENCH_WORKDIR", str(work))
        dm = SegmentationDataModule.from_experiment(cfg)
        dm.setup("test")
    return dm.parts["test"], dm


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_model_input_is_the_test_batch_item(tiny_run: tuple[Path, Path], tiny_synthetic: Path) -> None:
    from lesionbench.data.preprocess import model_input
    from lesionbench.inference.load import load_run
    run, work = tiny_run
    samples, dm = _test_samples(run, work, tiny_synthetic)
    loader_items = dm.test_dataloader().dataset
    loaded = load_run(run)
    stats = loaded.preprocess.stats  # recorded in metrics.json by the run
    assert stats == (tuple(dm.mean), tuple(dm.std))
    size_in = loaded.cfg.dataset.image_size
    for i, s in enumerate(samples):
        x, size = model_input(s.image, size_in, "none", stats)
        assert x.shape[-2:] == ((32, 32) if size_in == 32 else (32, 48))
        assert torch.equal(x, loader_items[i]["image"]), s.id
        assert size == tuple(loader_items[i]["orig_mask"].shape[-2:])
        y, original = loaded.preprocess(s.image)
        assert torch.equal(y, x) and original == size


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_predict_reproduces_per_image_csv(tiny_run: tuple[Path, Path], tiny_synthetic: Path, tmp_path: Path) -> None:
    """The masks predict writes are the very masks the test loop saved (predictions/), and rescore to
    per_image.csv within 1e-9 (not 1e-6: batched as the test loop batched)."""
    from lesionbench.data.decode import load_mask
    from lesionbench.inference.predict import predict_files
    from lesionbench.metrics.scores import image_stats, per_image_metrics
    run, work = tiny_run
    samples, _ = _test_samples(run, work, tiny_synthetic)
    predict_files(run, [s.image for s in samples], tmp_path / "sub", fmt="isic")
    with open(run / "per_image.csv") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert sorted(rows) == sorted(s.id for s in samples)
    assert len({r["dice"] for r in rows.values()}) > 2  # centred logits: masks differ per image, the check has teeth
    for s in samples:
        pred = np.asarray(Image.open(tmp_path / "sub" / f"{s.image.stem}_segmentation.png")) > 127
        scored = np.asarray(Image.open(run / "predictions" / f"{s.id}_segmentation.png")) > 127
        assert np.array_equal(pred, scored), s.id
        gt = load_mask(s.masks[0], 0)
        stats = image_stats(torch.from_numpy(pred)[None, None], torch.from_numpy(gt.astype(bool))[None, None])
        for name, value in per_image_metrics(stats).items():
            assert float(value) == pytest.approx(float(rows[s.id][name]), abs=1e-9), (s.id, name)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_predict_runs_the_test_loops_batches(tiny_run: tuple[Path, Path], tiny_synthetic: Path) -> None:
    """The network sees the test split in batches of trainer.batch_size (4), not one image at a time,
    and each image's probabilities do not depend on which call it came in."""
    from lesionbench.inference.load import load_run
    run, work = tiny_run
    samples, _ = _test_samples(run, work, tiny_synthetic)
    loaded = load_run(run)
    seen: list[int] = []
    hook = loaded.network.register_forward_hook(lambda _m, inputs, _o: seen.append(len(inputs[0])))
    try:
        batched = loaded.predict([s.image for s in samples])
    finally:
        hook.remove()
    assert loaded.batch_size == loaded.cfg.trainer.batch_size == 4
    assert seen == [4] * (len(samples) // 4) + ([len(samples) % 4] if len(samples) % 4 else [])
    assert len(batched) == len(samples) and all(p.dtype == np.float32 for p in batched)
    again = loaded.predict([s.image for s in samples[:4]])
    assert all(np.array_equal(a, b) for a, b in zip(again, batched[:4], strict=True))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_metrics_json_carries_nsd_and_the_chance_floors(tiny_run: tuple[Path, Path], tiny_synthetic: Path) -> None:
    """Issue 30 items 6-7: per_image.csv's nsd is the NSD of the saved prediction against its truth at the
    dataset's tolerance, and metrics.json's chance floors are those of empty, full and mean-mask
    predictions on exactly the run's test images, as recomputed here from the files."""
    from lesionbench.data.decode import load_mask
    from lesionbench.io import read_json
    from lesionbench.metrics.boundary import nsd_tolerance, surface_metrics
    from lesionbench.metrics.chance import as_prediction, floors_from_rows, floors_from_stats, mean_mask
    from lesionbench.metrics.scores import image_stats
    from lesionbench.runfolder import read_metrics
    run, work = tiny_run
    samples, dm = _test_samples(run, work, tiny_synthetic)
    metrics, raw = read_metrics(run), read_json(run / "metrics.json")
    frame = pd.read_csv(run / "per_image.csv", dtype={"id": str}).set_index("id")
    assert metrics.nsd_tolerance == raw["nsd_tolerance"] == nsd_tolerance("synthetic") == 2.0
    assert "nsd" in raw["per_image"] and "nsd" in raw["per_class"]["lesion"]
    assert raw["per_image"]["nsd"] == pytest.approx(frame["nsd"].mean(), abs=1e-9)
    prior = mean_mask(dm.mask_mean("train"))
    stats, prior_stats = [], []
    for s in samples:
        pred = torch.from_numpy(np.asarray(Image.open(run / "predictions" / f"{s.id}_segmentation.png")) > 127)
        truth = torch.from_numpy(load_mask(s.masks[0], 0).astype(bool))
        assert surface_metrics(pred, truth, 2.0) == pytest.approx(
            tuple(frame.loc[s.id, ["hd95", "assd", "nsd"]]), abs=1e-9), s.id
        stats.append(image_stats(pred[None, None], truth[None, None]))
        prior_stats.append(image_stats(as_prediction(prior, truth.shape)[None], truth[None, None]))
    assert frame["nsd"].nunique() > 1  # centred logits: the masks differ per image, the check has teeth
    chance = metrics.chance
    assert chance is not None and chance.primary == "thresholded_jaccard" and chance.n_train == len(dm.train_ids)
    assert list(chance.scores) == ["thresholded_jaccard", "dice"]
    want = floors_from_stats(torch.cat(stats), "synthetic", torch.cat(prior_stats))
    for name, floor in chance.scores.items():
        assert floor.model_dump() == pytest.approx(want[name].model_dump(), abs=1e-12), name
        assert floor.mean_mask is not None and 0 <= floor.mean_mask <= 1
        counts = floors_from_rows(frame.reset_index(), "synthetic")[name]  # what a reader of old runs gets
        assert (counts.empty, counts.full) == pytest.approx((floor.empty, floor.full), abs=1e-12)
    assert chance.scores["dice"].full > 0
    # 12 tiny training masks overlap nowhere in more than half of them: the mean mask is empty and scores as
    # the empty floor (test_chance.py checks a non-empty one against a direct computation)
    assert prior.any() or all(f.mean_mask == f.empty for f in chance.scores.values())
