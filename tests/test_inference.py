"""Using a trained run: load_run, predict (any size, TTA), CAM methods on two families, visual report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runs import fake_run

from lesionbench.config import ExperimentConfig
from lesionbench.errors import LesionBenchError

PNG = b"\x89PNG\r\n\x1a\n"


def _cfg(model: dict, size: int = 32, epochs: int = 1) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "tiny", "dataset": {"name": "synthetic", "image_size": size, "augmentation": "none"},
        "model": model, "trainer": {"epochs": epochs, "batch_size": 4, "accelerator": "cpu", "devices": 1},
    })


@pytest.fixture(scope="module")
def trained_run(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real tiny training (unet, 8 channels, 32 px, 2 epochs) shared by this module."""
    from lesionbench.training.run import train
    tmp = tmp_path_factory.mktemp("inference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
        mp.setenv("LESIONBENCH_WORKDIR", str(tmp / "work"))
        run_dir = tmp / "results" / "t" / "tiny__s42"
        train(_cfg({"name": "unet", "options": {"base_channels": 8}}, epochs=2), run_dir, suite="t", progress=False)
        yield run_dir


def _image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.timeout(120)
def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(LesionBenchError, match="no such run folder"):
        from lesionbench.inference.load import load_run
        load_run(tmp_path / "missing")
    (tmp_path / "r").mkdir()
    from lesionbench.runfolder import RunInfo, write_run_info
    write_run_info(tmp_path / "r", RunInfo(status="running", run="r", experiment="tiny", config_hash="0"))
    with pytest.raises(LesionBenchError, match="not finished"):
        load_run(tmp_path / "r")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_load_run_matches_checkpoint(trained_run: Path) -> None:
    from lesionbench.inference.load import load_run
    run = load_run(trained_run)
    cfg = run.cfg
    assert cfg.model.name == "unet" and cfg.dataset.image_size == 32 and not run.network.training
    assert run.engine == "lightning" and run.threshold == 0.5 and run.class_names == ("lesion",)
    rel = json.loads((trained_run / "metrics.json").read_text())["best_checkpoint"]
    from safetensors.torch import load_file
    state = load_file(trained_run / rel)  # a finished run keeps the model's tensors only
    assert state.keys() == run.network.state_dict().keys()
    for k, v in run.network.state_dict().items():
        assert torch.equal(v, state[k]), k


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_predict_two_sizes_binary_masks(trained_run: Path, tmp_path: Path) -> None:
    from lesionbench.inference.predict import predict_files
    a, b = _image(tmp_path / "a.png", 50, 37, 1), _image(tmp_path / "b.jpg", 23, 61, 2)
    written = predict_files(trained_run, [a, b], tmp_path / "out", tta=True)
    assert sorted(p.name for p in written) == ["a_mask.png", "a_overlay.png", "b_mask.png", "b_overlay.png"]
    for stem, (w, h) in (("a", (50, 37)), ("b", (23, 61))):
        mask = np.asarray(Image.open(tmp_path / "out" / f"{stem}_mask.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert Image.open(tmp_path / "out" / f"{stem}_overlay.png").size == (w, h)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_predict_matches_test_metrics_and_tta(trained_run: Path) -> None:
    """Without TTA, predict on an array reproduces the run's own per-image Dice of a test image."""
    import csv

    from lesionbench.data import SegmentationDataModule
    from lesionbench.data.decode import load_pair
    from lesionbench.inference.load import load_run
    run = load_run(trained_run)
    cfg = run.cfg
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESIONBENCH_WORKDIR", str(trained_run.parent / "work2"))
        dm = SegmentationDataModule.from_experiment(cfg)
        dm.setup("test")
        sample = dm.parts["test"][0]
        image, gt = load_pair(sample, dm.layout.mask_threshold)
    pred = run.predict(image) > 0.5
    tp, fp, fn = (pred & (gt > 0)).sum(), (pred & (gt == 0)).sum(), (~pred & (gt > 0)).sum()
    dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    rows = {r["id"]: float(r["dice"]) for r in csv.DictReader(open(trained_run / "per_image.csv"))}
    assert dice == pytest.approx(rows[sample.id], abs=1e-6)
    probs = run.predict(image, tta=True)
    assert probs.shape == gt.shape and 0 <= probs.min() <= probs.max() <= 1


@pytest.mark.parametrize("model", [{"name": "unet", "options": {"base_channels": 8}},
                                   {"name": "test-fct-resnet", "options": {}}])
@pytest.mark.timeout(120)
def test_every_cam_method_two_families(model: dict, tmp_path: Path) -> None:
    from lesionbench.inference.explain import METHODS, explain_array, explain_file
    from lesionbench.inference.load import load_run
    run = fake_run(tmp_path / "run", _cfg(model, size=32))
    loaded = load_run(run)
    model, cfg = loaded.network, loaded.cfg
    image = np.asarray(Image.open(_image(tmp_path / "x.png", 45, 30)).convert("RGB"))
    runs = [(m, None) for m in METHODS] + [("gradcam", "last"), ("cam", "bottleneck")]
    for method, layer in runs:  # default layers: cam -> last, every other method -> bottleneck
        if True:
            heat = explain_array(model, cfg, image, method, layer)
            assert heat.shape == (30, 45) and np.isfinite(heat).all(), (method, layer)
            assert 0.0 <= heat.min() and heat.max() <= 1.0, (method, layer)
    path = explain_file(run, tmp_path / "x.png", tmp_path / "cams", "gradcam++")
    assert path.name == "x_gradcampp_bottleneck.png" and path.read_bytes()[:8] == PNG
    assert Image.open(path).size == (45, 30)
    with pytest.raises(LesionBenchError, match="unknown CAM method"):
        explain_array(model, cfg, image, "nope")


@pytest.mark.timeout(120)
def test_error_map_colours() -> None:
    from lesionbench.data.drawing import FN_COLOUR, FP_COLOUR, TP_COLOUR, error_map
    pred = np.array([[1, 1], [0, 0]], bool)
    gt = np.array([[1, 0], [1, 0]], bool)
    e = error_map(pred, gt)
    assert tuple(e[0, 0]) == TP_COLOUR and tuple(e[0, 1]) == FP_COLOUR
    assert tuple(e[1, 0]) == FN_COLOUR and tuple(e[1, 1]) == (0, 0, 0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_visual_report(trained_run: Path, tiny_synthetic: Path) -> None:
    from lesionbench.reporting.visual import write_run_report
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
        mp.setenv("LESIONBENCH_WORKDIR", str(trained_run.parent / "work3"))
        paths = write_run_report(trained_run)
    names = sorted(p.name for p in paths)
    assert names == ["best_worst.png", "curves.png", "errors.png", "index.md", "samples.png"]
    for p in paths:
        # one curves figure per run: the leaderboard's plots/curves.png, embedded by the report
        assert p.parent == trained_run / ("plots" if p.name == "curves.png" else "report") and p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG, p
            assert min(Image.open(p).size) > 100
    index = (trained_run / "report" / "index.md").read_text()
    assert "![samples](samples.png)" in index and "![curves](../plots/curves.png)" in index
    assert not (trained_run / "report" / "curves.png").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_visual_report_draws_each_image_s_own_masks_errors_and_dice(trained_run: Path, tiny_synthetic: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What the figures show, not only that they exist: every error-map panel is exactly the run's saved
    prediction against its truth (magenta false positives, cyan false negatives), and every Dice label
    is per_image.csv's Dice of that image."""
    import pandas as pd

    from lesionbench.data.drawing import FN_COLOUR, FP_COLOUR, error_map
    from lesionbench.reporting import visual
    from lesionbench.runfolder import INPUTS, PREDICTIONS

    drawn: dict[str, list] = {}
    monkeypatch.setattr(visual, "_grid", lambda rows, path, legend=False: drawn.setdefault(path.name, rows) and path)
    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
    visual.write_run_report(trained_run)
    dice = pd.read_csv(trained_run / "per_image.csv", dtype={"id": str}).set_index("id")["dice"]
    picked = json.loads((trained_run / INPUTS / "samples.json").read_text())
    assert [sid for sid, _ in drawn["errors.png"]] == picked["grid"] and picked["grid"]
    errors_seen = 0
    for sid, [(image, _), (errors, label)] in drawn["errors.png"]:
        size = (image.shape[1], image.shape[0])

        def mask(folder: Path, sid: str = sid, size: tuple[int, int] = size) -> np.ndarray:
            png = Image.open(folder / f"{sid}_segmentation.png").convert("L")
            return np.asarray(png.resize(size, Image.Resampling.NEAREST)) > 127

        expected = error_map(mask(trained_run / PREDICTIONS), mask(trained_run / INPUTS / "truth"))
        assert np.array_equal(errors, expected), sid
        errors_seen += int((errors == FP_COLOUR).all(-1).sum() + (errors == FN_COLOUR).all(-1).sum())
        assert label == f"Dice {dice[sid]:.3f}"
    assert errors_seen > 0  # an untrained model makes mistakes: the map must show them
    for label, panels in drawn["best_worst.png"]:
        kind, sid = label.split(": ")
        assert panels[0][1] == f"Dice {dice[sid]:.3f}"
    best = max(dice[label.split(": ")[1]] for label, _ in drawn["best_worst.png"] if label.startswith("best"))
    assert best == dice.max()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_visual_report_draws_from_the_run_folder_alone(trained_run: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """17.2: a run folder copied to a machine without the data (and without building the data module
    or loading the model) still draws every figure, from what the test loop saved."""
    import lesionbench.data.datamodule as datamodule
    import lesionbench.inference.load as load
    from lesionbench.reporting.visual import write_run_report

    copy = shutil.copytree(trained_run, tmp_path / "elsewhere" / trained_run.name)
    for name in ("samples.png", "errors.png", "best_worst.png", "index.md"):
        (copy / "report" / name).unlink(missing_ok=True)

    def refuse(*_a, **_k):
        raise AssertionError("the report rebuilt the data module or loaded the model")

    monkeypatch.setattr(datamodule.SegmentationDataModule, "__init__", refuse)
    monkeypatch.setattr(load, "load_run", refuse)
    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", str(tmp_path / "no-data-here"))
    names = sorted(p.name for p in write_run_report(copy))
    assert names == ["best_worst.png", "curves.png", "errors.png", "index.md", "samples.png"]
    picked = json.loads((copy / "report" / "inputs" / "samples.json").read_text())
    assert len(picked["grid"]) == min(8, len(picked["scores"])) and picked["best"] and picked["worst"]
    assert max(Image.open(copy / "report" / "inputs" / f"{picked['grid'][0]}.jpg").size) <= 512


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_saved_predictions_rescore_to_per_image_csv(trained_run: Path, tiny_synthetic: Path, tmp_path: Path) -> None:
    """predictions/ holds the very masks the test loop scored, named as the ISIC challenge names them:
    ``lesionbench score`` on them gives per_image.csv's Dice for every test image."""
    import pandas as pd

    from lesionbench.data.layouts import scan
    from lesionbench.reporting.score import score_folder

    rows = pd.read_csv(trained_run / "per_image.csv", dtype={"id": str}).set_index("id")
    preds = sorted((trained_run / "predictions").glob("*_segmentation.png"))
    assert sorted(p.name.removesuffix("_segmentation.png") for p in preds) == sorted(rows.index)
    truth = tmp_path / "truth"
    truth.mkdir()
    test = {s.id: s for s in scan("synthetic", tiny_synthetic / "isic2018")["test"]}
    for sid in rows.index:
        shutil.copy(test[sid].masks[0], truth / f"{sid}_segmentation.png")
    report = score_folder(truth, trained_run / "predictions")
    assert report.result["macro_average"]["dice"] == pytest.approx(rows["dice"].mean(), abs=1e-9)


@pytest.mark.timeout(120)
def test_cam_at_last_layer_is_classic_cam(tmp_path: Path) -> None:
    """Before a 1×1 conv head, Grad-CAM = ReLU(logit - bias), min-max scaled (Zhou et al.'s CAM)."""
    from lesionbench.inference.explain import explain_array
    from lesionbench.inference.load import load_run
    run = load_run(fake_run(tmp_path / "run", _cfg({"name": "unet", "options": {"base_channels": 8}})))
    model = run.network
    image = np.asarray(Image.open(_image(tmp_path / "x.png", 32, 32, 3)).convert("RGB"))
    heat = explain_array(model, run.cfg, image, "cam")
    x = run.preprocess(image)[0].unsqueeze(0)
    with torch.no_grad():
        logit = model(x)[0, 0]
    # the target mask (predicted, or all pixels) only scales the channel weights, by its mean
    cam = torch.relu(logit - model.head.bias[0]).detach().numpy()
    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-7)
    assert np.abs(heat - cam).max() < 1e-3


def _ds_cfg(dataset: str) -> ExperimentConfig:
    cfg = _cfg({"name": "unet", "options": {"base_channels": 8}})
    return cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"name": dataset})})


@pytest.mark.timeout(120)
def test_predict_isic_format_is_only_challenge_masks(tmp_path: Path) -> None:
    """Task 1: <id>_segmentation.png only; Task 2: the five <id>_attribute_<name>.png; 0/255, L, original size."""
    from lesionbench.data.layouts import TASK2_ATTRIBUTES
    from lesionbench.inference.predict import predict_files
    a = _image(tmp_path / "ISIC_0000001.jpg", 50, 37, 1)
    b = _image(tmp_path / "ISIC_0000002.png", 23, 61, 2)
    run1 = fake_run(tmp_path / "run1", _ds_cfg("isic2018"))
    predict_files(run1, [a, b], tmp_path / "t1", fmt="isic", overlays=tmp_path / "over")
    assert sorted(p.name for p in (tmp_path / "t1").iterdir()) == ["ISIC_0000001_segmentation.png",
                                                                   "ISIC_0000002_segmentation.png"]
    assert sorted(p.name for p in (tmp_path / "over").iterdir()) == ["ISIC_0000001_overlay.png",
                                                                     "ISIC_0000002_overlay.png"]
    for name, (w, h) in (("ISIC_0000001", (50, 37)), ("ISIC_0000002", (23, 61))):
        img = Image.open(tmp_path / "t1" / f"{name}_segmentation.png")
        assert img.mode == "L" and img.size == (w, h) and set(np.unique(np.asarray(img))) <= {0, 255}
    run2 = fake_run(tmp_path / "run2", _ds_cfg("isic2018-task2"))
    predict_files(run2, [a], tmp_path / "t2", fmt="isic")  # no --overlays: no overlays anywhere
    assert sorted(p.name for p in (tmp_path / "t2").iterdir()) == sorted(
        f"ISIC_0000001_attribute_{n}.png" for n in TASK2_ATTRIBUTES)
    assert set(TASK2_ATTRIBUTES) == {"globules", "milia_like_cyst", "negative_network", "pigment_network", "streaks"}
    with pytest.raises(LesionBenchError, match="--format isic: the run was trained on kvasir-seg"):
        predict_files(fake_run(tmp_path / "run3", _ds_cfg("kvasir-seg")), [a], tmp_path / "t3", fmt="isic")
    with pytest.raises(LesionBenchError, match="must differ from --out"):
        predict_files(run1, [a], tmp_path / "t4", fmt="isic", overlays=tmp_path / "t4")
    holiday = _image(tmp_path / "holiday_photo.jpg", 20, 20, 3)  # issue 23 item 9: not an ISIC id
    with pytest.raises(LesionBenchError, match=r"--format isic: 1 input\(s\) not named as ISIC images .*holiday_photo"):
        predict_files(run1, [a, holiday], tmp_path / "t5", fmt="isic")
    assert not (tmp_path / "t5").exists() or not list((tmp_path / "t5").iterdir())  # refused before writing


@pytest.mark.timeout(120)
def test_predict_never_overwrites_silently(tmp_path: Path) -> None:
    from lesionbench.inference.predict import predict_files
    run = fake_run(tmp_path / "run", _ds_cfg("isic2018"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    x1, x2 = _image(tmp_path / "a" / "x.png", 30, 20, 1), _image(tmp_path / "b" / "x.jpg", 30, 20, 2)
    with pytest.raises(LesionBenchError, match=r"a/x\.png and .*b/x\.jpg would both write .*x_mask\.png") as err:
        predict_files(run, [x1, x2], tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()  # refused before writing anything
    first = predict_files(run, [x1], tmp_path / "out")
    before = {p: p.read_bytes() for p in first}
    with pytest.raises(LesionBenchError, match=r"x_mask\.png: already exists; pass --overwrite"):
        predict_files(run, [x2], tmp_path / "out")
    assert {p: p.read_bytes() for p in first} == before
    again = predict_files(run, [x2], tmp_path / "out", overwrite=True)
    assert sorted(again) == sorted(first)


@pytest.mark.timeout(120)
def test_predict_unwritable_out_is_one_line(tmp_path: Path) -> None:
    from lesionbench.inference.predict import predict_files
    run = fake_run(tmp_path / "run", _ds_cfg("isic2018"))
    blocker = tmp_path / "out"
    blocker.write_text("a file, not a folder")
    with pytest.raises(LesionBenchError, match=r"out/x_mask\.png: cannot write .*choose a writable --out") as err:
        predict_files(run, [_image(tmp_path / "x.png", 20, 20)], blocker)
    assert "\n" not in str(err.value)
