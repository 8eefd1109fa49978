"""engine: nnunet on a tiny synthetic dataset: nnU-Net v2 trains fold 0 on our split (its shortest
trainer variant, a few iterations), predicts our test split, and the run folder is like any other.

The end-to-end tests need the optional extra (pip install 'lesionbench[nnunet]') and are skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from lesionbench.config import ConfigError, ExperimentConfig, parse_config
from lesionbench.errors import LesionBenchError

HAS_NNUNET = importlib.util.find_spec("nnunetv2") is not None
needs_nnunet = pytest.mark.skipif(not HAS_NNUNET, reason="nnunetv2 is not installed (optional extra: "
                                                         "pip install 'lesionbench[nnunet]')")
TINY = {"name": "nnunet_tiny", "engine": "nnunet",
        "dataset": {"name": "isic2018", "root": "synthetic", "image_size": 32, "subset": 6},
        "trainer": {"epochs": 1, "accelerator": "cpu", "devices": 1, "seed": 0},
        "nnunet": {"val_iterations": 1}}  # workers and iterations per epoch: the defaults (CPU: 0; the recipe's budget)


def test_config_engine_is_validated_and_old_hashes_stay() -> None:
    assert parse_config({"engine": "nnunet"}).nnunet.configuration == "2d"
    with pytest.raises(ConfigError, match="binary datasets only; isic2018-task2"):
        parse_config({"engine": "nnunet", "dataset": {"name": "isic2018-task2"}})
    with pytest.raises(ConfigError, match="engine is lightning"):
        parse_config({"nnunet": {"trainer": "nnUNetTrainer"}})
    with pytest.raises(ConfigError, match="nnunet.plans"):
        parse_config({"engine": "nnunet", "nnunet": {"plans": "mine"}})
    # Lightning configs hash as before engines existed (finished runs are not re-made): the engine fields
    # are left out of a Lightning config's hash, so the default hash is pinned here
    assert ExperimentConfig().config_hash() == "576d32fb225ed0cd"  # a tripwire: update it only on purpose
    assert ExperimentConfig(engine="nnunet").config_hash() != ExperimentConfig().config_hash()


def test_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from lesionbench.engines import nnunet_setup
    from lesionbench.studies.train import train

    monkeypatch.setattr(nnunet_setup.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LesionBenchError, match=r"pip install 'lesionbench\[nnunet\]'") as err:
        train(parse_config({"engine": "nnunet"}), tmp_path / "run")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


@pytest.mark.slow
@needs_nnunet
def test_trainer_variant_closest_to_the_budget() -> None:
    from lesionbench.engines.nnunet_setup import pick_trainer

    assert pick_trainer("auto", 1) == "nnUNetTrainer_1epoch"
    assert pick_trainer("auto", 40) == "nnUNetTrainer_50epochs"
    assert pick_trainer("auto", 12) == "nnUNetTrainer_10epochs"
    assert pick_trainer("auto", 1000) == "nnUNetTrainer"
    assert pick_trainer("nnUNetTrainer_5epochs", 40) == "nnUNetTrainer_5epochs"


class TinyRun(NamedTuple):
    run_dir: Path
    cfg: ExperimentConfig
    env: dict[str, str]  # the LESIONBENCH_* variables the run saw


@pytest.fixture(scope="module")
def nnunet_run(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """Start the run through the CLI, kill it (process group) during nnU-Net's training, run it again."""
    from runs import kill_when

    from lesionbench.studies.train import train

    tmp = tmp_path_factory.mktemp("nnunet")
    ours = {"LESIONBENCH_SYNTHETIC": str(tiny_synthetic), "LESIONBENCH_WORKDIR": str(tmp / "work")}
    env = {**os.environ, **ours}
    exp = tmp / "nnunet_tiny.yaml"
    exp.write_text(parse_config(TINY).to_yaml())
    cmd = [sys.executable, "-m", "lesionbench.cli", "run", str(exp), "--out", str(tmp / "results")]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    run_dir = tmp / "results" / "adhoc" / "nnunet_tiny__s0"
    kill_when(proc, lambda: bool(list(run_dir.glob("nnunet/results/*/*/fold_0/training_log_*.txt"))), timeout=400)
    assert not (run_dir / "metrics.json").exists()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ours.items():
            mp.setenv(key, value)
        cfg = parse_config(TINY)
        result = train(cfg, run_dir, suite="adhoc")
    assert result.status == "finished"
    return TinyRun(run_dir, cfg, ours)


@needs_nnunet
@pytest.mark.slow
def test_run_folder_is_complete(nnunet_run: TinyRun) -> None:
    from lesionbench.lifecycle import is_finished

    run_dir, cfg = nnunet_run.run_dir, nnunet_run.cfg
    for name in ("config.yaml", "run.json", "metrics.json", "per_image.csv"):
        assert (run_dir / name).is_file(), name
    info = json.loads((run_dir / "run.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert info["status"] == "finished" and info["versions"]["nnunetv2"]
    assert info["nnunet"]["trainer"] == "nnUNetTrainer_1epoch" and info["nnunet"]["chosen"]["patch_size"]
    assert metrics["model"].startswith("nnunet:2d/nnUNetPlans") and metrics["n_test"] == 5
    assert metrics["cost"]["params"] > 0 and metrics["cost"]["train_time_s"] > 0
    assert metrics["challenge"]["metric"] == "thresholded_jaccard"
    assert is_finished(run_dir, cfg), "a re-run of the same config skips it"


@needs_nnunet
@pytest.mark.slow
def test_test_metrics_recomputed_from_predicted_masks(nnunet_run: TinyRun) -> None:
    """The saved masks are at each ground truth's own size (trained at 32 px) and give the CSV's numbers,
    boundary distances included (the same columns as every other run's)."""
    from lesionbench.data.decode import load_mask
    from lesionbench.metrics.boundary import boundary_distances
    from lesionbench.metrics.scores import image_stats, per_image_metrics

    run_dir = nnunet_run.run_dir
    rows = pd.read_csv(run_dir / "per_image.csv", dtype={"id": str}).set_index("id")
    dm = _datamodule(nnunet_run)
    assert sorted(rows.index) == sorted(dm.test_ids)
    for s in dm.parts["test"]:
        truth = torch.from_numpy(load_mask(s.masks[0], dm.layout.mask_threshold))[None, None].bool()
        pred = torch.from_numpy(np.asarray(Image.open(run_dir / "predictions" / f"{s.id}_segmentation.png")) > 127)[None, None]
        assert pred.shape == truth.shape and truth.shape[-2:] != (32, 32)
        dice = float(per_image_metrics(image_stats(pred, truth))["dice"][0, 0])
        assert dice == pytest.approx(rows.loc[s.id, "dice"], abs=1e-9)
        hd95, assd = boundary_distances(pred[0, 0], truth[0, 0])
        assert (hd95, assd) == pytest.approx((rows.loc[s.id, "hd95"], rows.loc[s.id, "assd"]), abs=1e-6)
    assert {"hd95", "assd"} <= set(json.loads((run_dir / "metrics.json").read_text())["per_image"])


@needs_nnunet
@pytest.mark.slow
def test_export_holds_exactly_the_split(nnunet_run: TinyRun) -> None:
    from lesionbench.engines.nnunet_data import exported_ids

    run_dir = nnunet_run.run_dir
    dm = _datamodule(nnunet_run)
    nn = json.loads((run_dir / "run.json").read_text())["nnunet"]
    got = exported_ids(Path(nn["raw"]))
    assert got["imagesTr"] == got["labelsTr"] == sorted(dm.train_ids + dm.val_ids)
    assert got["imagesTs"] == sorted(dm.test_ids)
    splits = json.loads((Path(nn["preprocessed"]) / "splits_final.json").read_text())
    assert splits == [{"train": dm.train_ids, "val": dm.val_ids}]
    dataset = json.loads((Path(nn["raw"]) / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert dataset["labels"] == {"background": 0, "lesion": 1} and dataset["numTraining"] == len(got["imagesTr"])


@needs_nnunet
@pytest.mark.slow
def test_killed_run_leaves_one_row(nnunet_run: TinyRun) -> None:
    from lesionbench.reporting.leaderboard import collect_runs

    run_dir = nnunet_run.run_dir
    records = collect_runs(run_dir.parent)
    assert [r.run for r in records] == [run_dir.name] and records[0].ok
    rows = pd.read_csv(run_dir / "per_image.csv", dtype={"id": str})
    assert not rows["id"].duplicated().any() and len(rows) == 5


# ---- issue 21.6: nnU-Net as its authors intend, on an equal budget

@needs_nnunet
@pytest.mark.timeout(30)
def test_cpu_runs_are_reproducible_by_default_and_others_say_not() -> None:
    """nnU-Net has no seeded multi-process loader (NonDetMultiThreadedAugmenter, seeds=None): on CPU the
    default is its in-process augmenter; a run that cannot repeat says why in run.json."""
    from lesionbench.engines.nnunet_setup import augmentation_workers

    assert augmentation_workers(None, "cpu") == (0, {"reproducible": True, "augmentation_workers": 0})
    for requested, device in ((None, "cuda"), (4, "cpu"), (0, "cuda")):
        workers, record = augmentation_workers(requested, device)
        assert record["reproducible"] is False and "nnunet.workers=0" in record["why_not"], (requested, device)
        assert workers == requested


@needs_nnunet
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_same_config_gives_the_same_nnunet_result(nnunet_run: TinyRun, nnunet_straight_run: Path) -> None:
    """A second run of the killed-and-resumed fixture's config, trained straight through in another folder
    with default workers (conftest's session run), repeats it byte for byte (the kill came before any
    checkpoint: 1 epoch, nnU-Net saves its latest every 50)."""
    info = json.loads((nnunet_run.run_dir / "run.json").read_text())["nnunet"]
    assert info["reproducible"] is True and info["augmentation_workers"] == 0 and "why_not" not in info
    again = nnunet_straight_run
    assert again != nnunet_run.run_dir and yaml.safe_load((again / "config.yaml").read_text()) == \
        yaml.safe_load((nnunet_run.run_dir / "config.yaml").read_text())
    assert (again / "per_image.csv").read_bytes() == (nnunet_run.run_dir / "per_image.csv").read_bytes()
    for mask in sorted((nnunet_run.run_dir / "predictions").glob("*.png")):
        assert (again / "predictions" / mask.name).read_bytes() == mask.read_bytes(), mask.name


@pytest.mark.slow
@needs_nnunet
@pytest.mark.timeout(60)
def test_postprocessing_file_is_applied_to_the_test_masks(tmp_path: Path) -> None:
    """score() applies nnU-Net's postprocessing.pkl (here: keep the largest lesion) to the thresholded masks."""
    from batchgenerators.utilities.file_and_folder_operations import save_pickle
    from nnunetv2.postprocessing.remove_connected_components import (
        remove_all_but_largest_component_from_segmentation,
    )
    from scipy import ndimage

    from lesionbench.data.layouts import Sample
    from lesionbench.engines.nnunet_data import score

    probs = np.zeros((2, 1, 20, 24), np.float32)
    probs[1, 0, 2:10, 2:10] = probs[1, 0, 14:17, 18:21] = 0.9  # a large and a small blob
    probs[0] = 1 - probs[1]
    (tmp_path / "pred").mkdir()
    np.savez(tmp_path / "pred" / "img0.npz", probabilities=probs)
    truth = np.zeros((20, 24), np.uint8)
    truth[2:10, 2:10] = 255
    Image.fromarray(truth).save(tmp_path / "img0_mask.png")
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(tmp_path / "img0.png")
    sample = Sample("img0", tmp_path / "img0.png", (tmp_path / "img0_mask.png",))
    pkl = tmp_path / "postprocessing.pkl"
    save_pickle(([remove_all_but_largest_component_from_segmentation], [{"labels_or_regions": [1]}]), str(pkl))
    components = {}
    for name, pp in (("raw", None), ("pp", pkl)):
        metrics, rows = score([sample], tmp_path / "pred", 127, "isic2018", ["lesion"], tmp_path / name, pp)
        mask = np.asarray(Image.open(tmp_path / name / "img0_segmentation.png")) > 127
        components[name] = (ndimage.label(mask)[1], rows[0]["dice"])
    assert components["raw"][0] == 2 and components["pp"][0] == 1
    assert components["pp"][1] == pytest.approx(1.0) and components["raw"][1] < 0.99


@needs_nnunet
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_postprocessing_determined_on_fold0_validation_and_recorded(nnunet_run: TinyRun) -> None:
    from scipy import ndimage

    run_dir = nnunet_run.run_dir
    pp = json.loads((run_dir / "run.json").read_text())["nnunet"]["postprocessing"]
    assert pp["determined_on"].startswith("fold 0 validation") and isinstance(pp["applied"], bool)
    assert pp["applied"] == bool(pp["functions"]) and pp["val_dice_before"] is not None
    crossval = next(run_dir.glob("nnunet/results/*/*/crossval_results_folds_0"))
    assert (crossval / "postprocessing.pkl").is_file()
    if "remove_all_but_largest_component_from_segmentation" in pp["functions"]:
        for mask in (run_dir / "predictions").glob("*.png"):
            assert ndimage.label(np.asarray(Image.open(mask)) > 127)[1] <= 1, mask.name


@needs_nnunet
@pytest.mark.timeout(30)
def test_matched_iterations_stay_within_ten_percent_of_the_recipe() -> None:
    from lesionbench.engines.nnunet_setup import matched_iterations

    # the matrix: 40 epochs of ISIC 2018's 2075 training images; nnU-Net's 50-epoch trainer, plausible batches
    for n_train, batch in ((2075, 12), (2075, 49), (900, 33), (1000, 2)):
        iters = matched_iterations(40 * n_train, 50, batch)
        assert abs(50 * iters * batch / (40 * n_train) - 1) <= 0.1, (n_train, batch, iters)
    assert matched_iterations(3, 50, 12) == 1  # never zero


@needs_nnunet
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_images_seen_recorded_and_matched_to_the_recipe(nnunet_run: TinyRun) -> None:
    run_dir = nnunet_run.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    nn = json.loads((run_dir / "run.json").read_text())["nnunet"]
    budget, n_train = nn["budget"], len(_datamodule(nnunet_run).train_ids)
    assert budget["recipe_images"] == nnunet_run.cfg.trainer.epochs * n_train
    assert metrics["cost"]["images_seen"] == budget["images_seen"] == (
        budget["epochs"] * budget["iterations_per_epoch"] * budget["batch_size"])
    assert budget["iterations"] == "matched to the recipe" and budget["iterations_per_epoch"] < 250
    assert abs(budget["images_seen"] / budget["recipe_images"] - 1) <= 0.5 / budget["iterations_per_epoch"]
    assert budget["ratio"] == pytest.approx(budget["images_seen"] / budget["recipe_images"], abs=1e-3)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_lightning_runs_record_images_seen(synthetic_env: Path, tmp_path: Path) -> None:
    """The same column for Lightning rows: epochs x training images."""
    from lesionbench.data import SegmentationDataModule
    from lesionbench.studies.train import train

    cfg = parse_config({"name": "seen", "dataset": {"name": "isic2018", "root": "synthetic", "image_size": 32,
                                                    "subset": 6},
                        "model": {"name": "unet", "options": {"base_channels": 8}},
                        "trainer": {"epochs": 2, "batch_size": 4, "accelerator": "cpu", "devices": 1}})
    result = train(cfg, tmp_path / "run", suite="t", progress=False)
    dm = SegmentationDataModule(cfg.dataset.model_copy(update={"cache": False}), 4, cfg.trainer.seed)
    dm.setup()
    seen = json.loads((result.run_dir / "metrics.json").read_text())["cost"]["images_seen"]
    assert seen == 2 * len(dm.train_ids)


def test_native_resolution_is_an_option_and_input_size_recorded() -> None:
    assert parse_config({"engine": "nnunet"}).nnunet.native_resolution is False
    assert parse_config({"engine": "nnunet", "nnunet": {"native_resolution": True}}).nnunet.native_resolution
    assert ExperimentConfig(engine="nnunet", nnunet={"native_resolution": True}).config_hash() != \
        ExperimentConfig(engine="nnunet").config_hash()


@needs_nnunet
@pytest.mark.timeout(120)
def test_native_resolution_export_keeps_each_images_size(synthetic_env: Path, tmp_path: Path) -> None:
    from lesionbench.data import SegmentationDataModule
    from lesionbench.engines.nnunet_data import export_raw

    dm = SegmentationDataModule(parse_config(TINY).dataset.model_copy(update={"cache": False}), 4, 0)
    dm.setup()
    for size, name in ((None, "native"), (32, "square")):
        record = export_raw(dm.parts, tmp_path / name, size, dm.layout.mask_threshold, "Dataset500_x")
        assert record["image_size"] == ("native" if size is None else 32)
        for s in dm.parts["train"][:2]:
            original = Image.open(s.image).size
            image = Image.open(tmp_path / name / "imagesTr" / f"{s.id}_0000.png")
            label = Image.open(tmp_path / name / "labelsTr" / f"{s.id}.png")
            assert image.size == label.size == (original if size is None else (32, 32))
    assert original != (32, 32)


@needs_nnunet
@pytest.mark.slow
@pytest.mark.timeout(60)
def test_run_json_says_what_nnunet_planned_on(nnunet_run: TinyRun) -> None:
    nn = json.loads((nnunet_run.run_dir / "run.json").read_text())["nnunet"]
    assert nn["input"] == "resized to 32x32"
    assert json.loads((nnunet_run.run_dir / "metrics.json").read_text())["nnunet"]["input"] == nn["input"]


def _datamodule(run: TinyRun) -> Any:
    """The same split the run used (same data, split file and seed)."""
    from lesionbench.data import SegmentationDataModule

    with pytest.MonkeyPatch.context() as mp:
        for key, value in run.env.items():
            mp.setenv(key, value)
        dm = SegmentationDataModule(run.cfg.dataset.model_copy(update={"cache": False}), 4, run.cfg.trainer.seed)
        dm.setup()
    return dm


def test_suites_gain_an_nnunet_row_per_binary_dataset() -> None:
    from lesionbench.studies.suite import expand_suite, load_suite

    for suite, seeds in (("baselines", 1), ("matrix", 3)):
        runs = [r for r in expand_suite(load_suite(suite), quick=True) if r.config.engine == "nnunet"]
        assert sorted({r.config.dataset.name for r in runs}) == ["isic2016", "isic2017", "isic2018", "kvasir-seg"]
        assert len(runs) == 4 * seeds, suite
    baseline = next(r.config for r in expand_suite(load_suite("baselines")) if r.config.engine == "nnunet")
    fair = next(r.config for r in expand_suite(load_suite("matrix")) if r.config.engine == "nnunet")
    assert baseline.trainer.epochs == 1000 and fair.trainer.epochs == 40  # nnU-Net's own recipe / the matrix budget


def test_task2_leaderboard_states_nnunet_unsupported(tmp_path: Path) -> None:
    from runs import write_scored_run

    from lesionbench.reporting.leaderboard import write_leaderboard

    row = {"id": "img0", "dice": 0.5, "iou": 1 / 3, "precision": 0.5, "recall": 0.5, "specificity": 1.0,
           "accuracy": 0.9}
    for dataset in ("isic2018-task2", "isic2018"):
        write_scored_run(tmp_path / "suite" / f"{dataset}_unet__s0", experiment=f"{dataset}_unet", dataset=dataset,
                         seed=0, rows=[row], metrics={"per_image": {"dice": 0.5}})
    board = write_leaderboard(tmp_path / "suite", make_plots=False).read_text()
    sections = {s.split("`")[0]: s for s in board.split("## Dataset `")[1:]}
    assert "**Unsupported:** nnU-Net (engine: nnunet)" in sections["isic2018-task2"]
    assert "Unsupported" not in sections["isic2018"]


@needs_nnunet
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_finished_run_keeps_only_the_final_weights(nnunet_run: TinyRun) -> None:
    """Like every other run, a finished nnU-Net run keeps one set of weights: nnU-Net's checkpoint_final.pth
    in its trained-model layout (its predictor reads it); checkpoint_best / _latest, as large, are gone."""
    run_dir = nnunet_run.run_dir
    kept = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*.pth"))
    assert [p.name for p in kept] == ["checkpoint_final.pth"] and kept[0].parent.name == "fold_0", kept
    assert str(kept[0]) == json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
