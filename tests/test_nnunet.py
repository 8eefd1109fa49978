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
from PIL import Image

from lesionbench.config import ConfigError, ExperimentConfig, parse_config
from lesionbench.errors import LesionBenchError

HAS_NNUNET = importlib.util.find_spec("nnunetv2") is not None
needs_nnunet = pytest.mark.skipif(not HAS_NNUNET, reason="nnunetv2 is not installed (optional extra: "
                                                         "pip install 'lesionbench[nnunet]')")
TINY = {"name": "nnunet_tiny", "engine": "nnunet",
        "dataset": {"name": "isic2018", "root": "synthetic", "image_size": 32, "subset": 6},
        "trainer": {"epochs": 1, "accelerator": "cpu", "devices": 1, "seed": 0},
        "nnunet": {"iterations_per_epoch": 3, "val_iterations": 1, "workers": 0}}


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
    from lesionbench.training.run import train

    monkeypatch.setattr(nnunet_setup.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LesionBenchError, match=r"pip install 'lesionbench\[nnunet\]'") as err:
        train(parse_config({"engine": "nnunet"}), tmp_path / "run")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


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

    from lesionbench.training.run import train

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
    from lesionbench.training.run import is_finished

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
    from lesionbench.training.boundary import boundary_distances
    from lesionbench.training.metrics import image_stats, per_image_metrics

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
