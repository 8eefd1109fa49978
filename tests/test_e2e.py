"""End to end on tiny synthetic data: the run folder, the leaderboard, phases, resume, DDP."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from runs import kill_when

from lesionbench.config import ExperimentConfig
from lesionbench.io import read_json
from lesionbench.lifecycle import is_finished
from lesionbench.training.run import train

TINY_MODEL = {"name": "unet", "options": {"base_channels": 8}}


def tiny(**sections) -> ExperimentConfig:
    data = {
        "name": "tiny",
        "dataset": {"name": "synthetic", "image_size": 32, "augmentation": "none"},
        "model": TINY_MODEL,
        "trainer": {"epochs": 2, "batch_size": 4, "accelerator": "cpu", "devices": 1},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return ExperimentConfig.model_validate(data)


@pytest.mark.slow
def test_one_run_writes_folder_and_leaderboard(synthetic_env: Path, tmp_path: Path) -> None:
    from lesionbench.reporting.leaderboard import write_leaderboard

    cfg = tiny()
    run_dir = tmp_path / "results" / "t" / "tiny__s42"
    result = train(cfg, run_dir, suite="t", progress=False)
    for name in ("config.yaml", "run.json", "metrics.json", "per_image.csv", "logs/metrics.csv"):
        assert (run_dir / name).is_file(), name
    metrics = read_json(run_dir / "metrics.json")
    for key in ("dice", "iou", "precision", "recall", "specificity", "accuracy"):
        assert 0.0 <= metrics["per_image"][key] <= 1.0
        assert 0.0 <= metrics["pooled"][key] <= 1.0
    assert metrics["n_test"] == 5 and metrics["challenge"]["metric"]
    assert (run_dir / metrics["best_checkpoint"]).is_file()
    info = read_json(run_dir / "run.json")
    assert info["status"] == "finished" and info["seed"] == 42 and info["versions"]["torch"]
    assert info["git_commit"] and info["data_manifest"]
    with open(run_dir / "per_image.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and len({r["id"] for r in rows}) == 5
    mean = sum(float(r["dice"]) for r in rows) / len(rows)
    assert mean == pytest.approx(metrics["per_image"]["dice"], abs=1e-6)
    assert is_finished(run_dir, cfg) and not is_finished(run_dir, tiny(trainer={"seed": 1}))
    assert result.status == "finished"
    ckpt = run_dir / metrics["best_checkpoint"]
    ckpt.rename(ckpt.with_suffix(".moved"))  # results copied without weights are re-made, not skipped
    assert not is_finished(run_dir, cfg)
    ckpt.with_suffix(".moved").rename(ckpt)
    board = write_leaderboard(run_dir.parent).read_text()
    assert "tiny" in board and "synthetic" in board


STAGES = ("encoder", "decoder", "encoder.conv1", "encoder.conv2", "encoder.conv3", "encoder.conv4", "encoder.conv5")


class _Snapshots(__import__("lightning").pytorch.Callback):
    """Copies of each named stage's tensors (parameters and BN buffers) around each fit (= phase)."""

    def __init__(self) -> None:
        self.states: list[tuple[dict, dict]] = []
        self._start: dict = {}

    @staticmethod
    def _copy(model) -> dict[str, list[torch.Tensor]]:
        stages = model.stages()
        return {n: [t.detach().clone() for t in [*stages[n].parameters(), *stages[n].buffers()] if t.is_floating_point()]
                for n in STAGES}

    def on_fit_start(self, trainer, pl_module) -> None:
        self._start = self._copy(pl_module.model)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.states.append((self._start, self._copy(pl_module.model)))


def _changed(before: dict, after: dict, stage: str) -> bool:
    assert before[stage], f"no tensors in {stage}"
    return any(not torch.equal(a, b) for a, b in zip(before[stage], after[stage], strict=False))


@pytest.mark.slow
def test_paper000_phases_freeze_what_they_say(synthetic_env: Path, tmp_path: Path) -> None:
    """Phase 1 trains the decoder only; phase 2 also conv4/conv5, never conv1-conv3 (BN stats included)."""
    cfg = tiny(
        model={"name": "fct-resnet50", "options": {"weights": "none"}},
        dataset={"image_size": 64},
        trainer={"batch_size": 2, "limit_train_batches": 2, "limit_val_batches": 1},
        loss={"terms": [{"name": "bce"}, {"name": "dice"}], "deep_supervision_weights": [0.14, 0.29, 0.57]},
        phases=[
            {"name": "decoder", "epochs": 1, "freeze": ["encoder"], "lr": 1e-3},
            {"name": "conv45", "epochs": 1, "freeze": ["encoder"], "unfreeze": ["encoder.conv4", "encoder.conv5"],
             "lr": 1e-4, "scheduler": {"name": "reduce-on-plateau"}, "early_stopping": {"patience": 12}},
        ],
    )
    snaps = _Snapshots()
    train(cfg, tmp_path / "run", callbacks=[snaps], progress=False)
    (s1, e1), (s2, e2) = snaps.states
    assert not _changed(s1, e1, "encoder") and _changed(s1, e1, "decoder")
    for stage in ("encoder.conv1", "encoder.conv2", "encoder.conv3"):
        assert not _changed(s2, e2, stage), stage
    for stage in ("encoder.conv4", "encoder.conv5", "decoder"):
        assert _changed(s2, e2, stage), stage


def _cli(*args: str, env: dict, cwd: Path, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lesionbench.cli", *args]
    return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **kw)


def _env(synthetic_env: Path, tmp_path: Path) -> dict:
    env = {**os.environ, "LESIONBENCH_SYNTHETIC": str(synthetic_env),
           "LESIONBENCH_WORKDIR": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}
    env["LESIONBENCH_EXPERIMENTS"] = str(Path(__file__).parents[1] / "experiments")
    return env


@pytest.mark.slow
def test_suite_survives_kill_and_skips_finished(synthetic_env: Path, tmp_path: Path) -> None:
    """2 models × 2 datasets: kill after the first run, re-run, nothing lost or duplicated."""
    base = tmp_path / "base.yaml"
    base.write_text("dataset: {image_size: 32, augmentation: none, subset: 8}\n"
                    "trainer: {epochs: 1, batch_size: 4, accelerator: cpu, devices: 1}\n")
    suite = tmp_path / "mini.yaml"
    suite.write_text(
        "name: mini\nmatrix:\n"
        f"  base: {base}\n"
        "  models: [{name: unet, options: {base_channels: 8}}, {name: unet-attention, options: {base_channels: 8}}]\n"
        "  datasets: [isic2016, kvasir-seg]\n  seeds: [0]\n")
    env, out = _env(synthetic_env, tmp_path), tmp_path / "results"
    proc = _cli("run", "--suite", str(suite), "--synthetic", "--out", str(out), env=env, cwd=tmp_path)
    suite_dir = out / "mini+synthetic"
    kill_when(proc, lambda: bool(list(suite_dir.glob("*/metrics.json"))))
    first = list(suite_dir.glob("*/metrics.json"))
    assert len(first) == 1, "killed after the first run finished"
    stamp = first[0].stat().st_mtime_ns
    proc = _cli("run", "--suite", str(suite), "--synthetic", "--out", str(out), env=env, cwd=tmp_path)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    assert first[0].stat().st_mtime_ns == stamp, "the finished run was not re-run"
    assert "skipped" in output
    runs = sorted(p.parent.name for p in suite_dir.glob("*/metrics.json"))
    assert len(runs) == 4 and len(set(runs)) == 4
    board = (suite_dir / "leaderboard.md").read_text()
    rows = [line for line in board.splitlines() if line.startswith("| ") and "`" in line and "__s0" not in line]
    model_rows = [r for r in rows if r.split("|")[1].strip().isdigit()]
    assert len(model_rows) == 4, board


@pytest.mark.slow
def test_ddp_two_processes_test_each_image_once(synthetic_env: Path, tmp_path: Path) -> None:
    """strategy=ddp on 2 CPU processes (gloo), 5 test images: each image once, pooled Dice = 1 process."""
    import lightning as L

    from lesionbench.data import SegmentationDataModule
    from lesionbench.metrics.scores import summarize

    exp = tmp_path / "ddp.yaml"
    exp.write_text("name: ddp\ndataset: {name: synthetic, image_size: 32, augmentation: none}\n"
                   "model: {name: unet, options: {base_channels: 8}}\n"
                   "trainer: {epochs: 1, batch_size: 2, accelerator: cpu, devices: 2, strategy: ddp}\n")
    env, out = _env(synthetic_env, tmp_path), tmp_path / "results"
    proc = _cli("run", str(exp), "--out", str(out), env=env, cwd=tmp_path)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    run_dir = out / "adhoc" / "ddp__s42"
    with open(run_dir / "per_image.csv") as fh:
        ids = [r["id"] for r in csv.DictReader(fh)]
    assert len(ids) == 5 and len(set(ids)) == 5
    metrics = read_json(run_dir / "metrics.json")
    # the same best weights (model.safetensors + config.yaml) tested in this single process
    from lesionbench.inference.load import load_run
    from lesionbench.training.task import SegmentationTask
    assert metrics["best_checkpoint"] == "model.safetensors"
    run = load_run(run_dir)
    task = SegmentationTask(run.cfg, net=run.network)
    dm = SegmentationDataModule.from_experiment(run.cfg)
    L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False).test(task, datamodule=dm, verbose=False)
    index, stats = task.test_result
    single, _ = summarize(stats, [dm.test_ids[i] for i in index.tolist()], "synthetic", dm.class_names)
    assert metrics["pooled"]["dice"] == pytest.approx(single["pooled"]["dice"], abs=1e-9)
    assert sorted(ids) == sorted(dm.test_ids)
    # issue 30: the chance floors are gathered over both processes as the counts are, each image once
    from lesionbench.metrics.chance import floors_from_stats
    floors = floors_from_stats(stats, "synthetic")
    assert metrics["chance"]["n_train"] == len(dm.train_ids) and "nsd" in metrics["per_image"]
    for name, floor in floors.items():
        assert metrics["chance"]["scores"][name]["full"] == pytest.approx(floor.full, abs=1e-12), name
        assert "mean_mask" in metrics["chance"]["scores"][name], name
