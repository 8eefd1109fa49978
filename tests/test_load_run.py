"""``lesionbench.load_run`` (issue 24 §2): one loader for every engine, without Lightning, shared by
predict, evaluate, explain, export and the visual report; the LightningModule takes the network it trains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runs import fake_run

from lesionbench.config import ExperimentConfig
from lesionbench.errors import LesionBenchError

UNET = {"name": "unet", "options": {"base_channels": 8}}


def _cfg(model: dict, dataset: str = "synthetic", size: int = 32) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "tiny", "dataset": {"name": dataset, "image_size": size, "augmentation": "none"}, "model": model,
        "trainer": {"epochs": 1, "batch_size": 3, "accelerator": "cpu", "devices": 1}})


def _image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_load_run_and_predict_never_import_lightning(tmp_path: Path) -> None:
    """The Python API in a fresh interpreter: `import lesionbench` loads no torch; load_run, predict and
    `lesionbench predict`'s writer load no Lightning (the LightningModule is for training only)."""
    run = fake_run(tmp_path / "run", _cfg(UNET))
    image = _image(tmp_path / "a.png", 30, 40)
    code = ("import sys, numpy as np, lesionbench\n"
            "light = 'torch' not in sys.modules\n"
            f"run = lesionbench.load_run({str(run)!r})\n"
            "probs = run.predict(np.zeros((40, 30, 3), np.uint8))\n"
            "from lesionbench.inference.predict import predict_files\n"
            "import lesionbench.inference.score\n"
            f"predict_files({str(run)!r}, [{str(image)!r}], {str(tmp_path / 'out')!r})\n"
            "print(light, probs.shape, run.masks([np.zeros((9, 7, 3), np.uint8)])[0].dtype,\n"
            "      sorted(m for m in ('lightning', 'pytorch_lightning', 'lesionbench.training') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[0] == "True (1, 40, 30) bool []"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", [UNET, {"name": "test-fct-resnet", "options": {}}])
def test_training_and_loading_build_the_same_network(model: dict, tmp_path: Path) -> None:
    """SegmentationTask(cfg) (its existing call sites: a config dict) and load_run build the network
    through create_model from the same config: the same state-dict keys and shapes, and the loaded
    tensors are the saved ones."""
    from lesionbench.inference.load import load_run
    from lesionbench.training.task import SegmentationTask

    cfg = _cfg(model)
    run = fake_run(tmp_path / "run", cfg)
    task = SegmentationTask(cfg.model_dump(mode="json"))
    network = load_run(run).network
    want = {k: tuple(v.shape) for k, v in task.model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == want
    assert type(network) is type(task.model) and task.hparams["config"] == cfg.model_dump(mode="json")


@pytest.mark.timeout(120)
def test_loading_never_asks_for_pretrained_weights() -> None:
    """The saved tensors replace the encoder, so the loader builds it with weights: none (no download)."""
    from lesionbench.inference.load import build_network

    network = build_network(_cfg({"name": "smp:Unet/resnet18", "options": {"weights": "imagenet"}}))
    assert network.weights_id == "none"


@pytest.mark.timeout(120)
def test_injected_network_is_trained_and_saved_as_is(tmp_path: Path) -> None:
    """lightning-hydra-template's injection: the task trains the network it is given, and its
    checkpoint hyper-parameters hold the config only (a checkpoint alone rebuilds the task)."""
    from lesionbench.models import create_model
    from lesionbench.training.task import SegmentationTask

    cfg = _cfg(UNET)
    net = create_model("unet", num_classes=1, base_channels=8)
    task = SegmentationTask(cfg, net=net)
    assert task.model is net and set(task.hparams) == {"config", "threshold"}
    rebuilt = SegmentationTask(task.hparams["config"])
    assert rebuilt.model.state_dict().keys() == net.state_dict().keys()


@pytest.mark.timeout(120)
def test_predict_takes_an_array_a_file_or_a_batch(tmp_path: Path) -> None:
    from lesionbench import LoadedRun, load_run

    run = load_run(fake_run(tmp_path / "run", _cfg(UNET)))
    assert isinstance(run, LoadedRun) and run.batch_size == 3
    one = np.asarray(Image.open(_image(tmp_path / "a.png", 50, 37)).convert("RGB"))
    assert run.predict(one).shape == (1, 37, 50) and run.predict(tmp_path / "a.png").shape == (1, 37, 50)
    probs = run.predict(np.stack([one] * 4))  # batches of 3 and 1: a batch's size may move the last bits
    assert len(probs) == 4 and all(np.array_equal(p, probs[0]) for p in probs[:3])
    assert np.allclose(probs[3], probs[0], atol=1e-5)
    masks = run.masks([one, str(tmp_path / "a.png")])
    assert [m.dtype for m in masks] == [np.bool_, np.bool_] and np.array_equal(masks[0], probs[0] > 0.5)
    with pytest.raises(AttributeError):
        run.threshold = 0.2  # frozen: what was loaded is what predicts


# ---- nnU-Net runs through nnU-Net's own predictor (needs the optional extra; one tiny run, ~2 min on 2 cores)

HAS_NNUNET = __import__("importlib").util.find_spec("nnunetv2") is not None
needs_nnunet = pytest.mark.skipif(not HAS_NNUNET, reason="nnunetv2 is not installed")


@pytest.fixture
def nnunet_run(nnunet_straight_run: Path) -> Path:
    """test_nnunet.py's tiny run, trained straight through (conftest: once per session)."""
    return nnunet_straight_run


def _test_samples(tiny_synthetic: Path, run_dir: Path) -> list:
    from lesionbench.data.layouts import scan

    ids = [line.split(",")[0] for line in (run_dir / "per_image.csv").read_text().splitlines()[1:]]
    test = {s.id: s for s in scan("isic2018", tiny_synthetic / "isic2018")["test"]}
    return [test[i] for i in ids]


@needs_nnunet
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_nnunet_run_predicts_the_masks_its_test_scored(nnunet_run: Path, tiny_synthetic: Path,
                                                         tmp_path: Path) -> None:
    """load_run on an nnU-Net run uses nnU-Net's predictor (checkpoint_final.pth): predict writes the very
    masks the engine's test scored (after its postprocessing), so they rescore to per_image.csv."""
    import pandas as pd

    from lesionbench.data.decode import load_mask
    from lesionbench.inference.load import load_run
    from lesionbench.inference.predict import predict_files
    from lesionbench.metrics.scores import image_stats, per_image_metrics

    run = load_run(nnunet_run)
    assert run.engine == "nnunet" and run.batch_size == 1 and run.preprocess.stats is None
    assert type(run.predictor).__name__ == "NnUNetRunPredictor" and run.class_names == ("lesion",)
    samples = _test_samples(tiny_synthetic, nnunet_run)
    predict_files(nnunet_run, [s.image for s in samples], tmp_path / "sub", fmt="isic")
    rows = pd.read_csv(nnunet_run / "per_image.csv", dtype={"id": str}).set_index("id")
    for s in samples:
        pred = np.asarray(Image.open(tmp_path / "sub" / f"{s.id}_segmentation.png")) > 127
        assert np.array_equal(pred, np.asarray(Image.open(nnunet_run / "predictions" / f"{s.id}_segmentation.png")) > 127)
        truth = torch.from_numpy(load_mask(s.masks[0], 127))[None, None].bool()
        dice = per_image_metrics(image_stats(torch.from_numpy(pred)[None, None], truth))["dice"]
        assert float(dice) == pytest.approx(rows.loc[s.id, "dice"], abs=1e-9)
    with pytest.raises(LesionBenchError, match="nnU-Net's own mirroring"):
        run.predict(samples[0].image, tta=True)


@needs_nnunet
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_nnunet_run_evaluates_and_draws_its_report(nnunet_run: Path, tiny_synthetic: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate on the run's own test split repeats its per_image.csv; the visual report draws every figure
    (its inputs made once from the test split, as the test loop makes them)."""
    import pandas as pd

    from lesionbench.reporting.visual import write_run_report
    from lesionbench.studies.evaluate import evaluate_run

    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
    monkeypatch.setenv("LESIONBENCH_WORKDIR", str(nnunet_run.parents[2] / "work"))
    result = evaluate_run(nnunet_run, "isic2018", accelerator="cpu")
    assert result.status == "evaluated" and result.metrics.model.startswith("nnunet:2d")
    own = pd.read_csv(nnunet_run / "per_image.csv", dtype={"id": str}).set_index("id")
    got = pd.read_csv(result.folder / "per_image.csv", dtype={"id": str}).set_index("id")
    assert sorted(got.index) == sorted(own.index)
    for column in ("dice", "iou", "hd95", "assd"):
        assert np.allclose(got.loc[own.index, column], own[column], atol=1e-9, equal_nan=True), column
    names = sorted(p.name for p in write_run_report(nnunet_run))
    assert {"samples.png", "errors.png", "best_worst.png", "index.md"} <= set(names)
    picked = json.loads((nnunet_run / "report" / "inputs" / "samples.json").read_text())
    assert picked["scores"] == {k: pytest.approx(own.loc[k, "dice"]) for k in picked["scores"]}
    assert len(picked["grid"]) == len(own) and picked["best"] and picked["worst"]


@needs_nnunet
@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("command", [["export", "--format", "onnx"], ["explain", "--image", "IMAGE"]])
def test_nnunet_run_export_and_explain_say_so_in_one_line(command: list[str], nnunet_run: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from lesionbench.cli import main

    image = _image(tmp_path / "x.png", 40, 30)
    argv = [c if c != "IMAGE" else str(image) for c in command]
    monkeypatch.setattr(sys, "argv", ["lesionbench", *argv, "--run", str(nnunet_run), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert "nnU-Net run (engine: nnunet)" in err and command[0] in err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())
