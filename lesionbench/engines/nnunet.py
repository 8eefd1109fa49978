"""engine: nnunet: nnU-Net v2 plans, trains and predicts; our split goes in, our metrics come out.

Steps, each skipped when its output is complete, so a killed run resumes (training from nnU-Net's
latest checkpoint) or restarts the interrupted step cleanly: export our split -> plan and
preprocess (2d) -> train fold 0 (+ nnU-Net's validation) -> predict the test split -> score with
LesionBench's metrics at original size -> the same run folder files as every other run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lesionbench.config import ExperimentConfig
from lesionbench.data.datamodule import SegmentationDataModule
from lesionbench.engines.nnunet_data import export_raw, score, write_splits
from lesionbench.engines.nnunet_setup import (
    DATASET_ID,
    NnUNetFolders,
    pick_device,
    pick_trainer,
    require_nnunet,
)
from lesionbench.errors import LesionBenchError
from lesionbench.io import (
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from lesionbench.runfolder import PerImageRow, RunInfo, RunMetrics, write_metrics, write_per_image, write_run_info
from lesionbench.training.provenance import provenance
from lesionbench.training.run import RunResult


def run_step(step: str, args: dict[str, Any], env: dict[str, str], log: Path) -> float:
    """One worker step in a child process (output appended to ``log``); its wall seconds."""
    cmd = [sys.executable, "-m", "lesionbench.engines.nnunet_worker", step, json.dumps(args)]
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n=== {step} {datetime.now(UTC).isoformat(timespec='seconds')}\n")
        out.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = proc.wait()
        except BaseException:  # interrupted: never leave nnU-Net training behind
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if code:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        raise LesionBenchError(f"nnU-Net {step} failed (exit {code}): {lines[-1] if lines else ''} (log: {log})")
    return time.perf_counter() - start


def plans_summary(model: Path, configuration: str) -> dict[str, Any]:
    """What nnU-Net chose for this dataset, for provenance (the full plans.json sits beside the model)."""
    plans = read_json(model / "plans.json")
    c = plans["configurations"][configuration]
    arch = c.get("architecture", {})
    return {"plans_name": plans.get("plans_name"), "patch_size": c.get("patch_size"),
            "batch_size": c.get("batch_size"), "network": arch.get("network_class_name"),
            "features_per_stage": arch.get("arch_kwargs", {}).get("features_per_stage"),
            "normalization": c.get("normalization_schemes")}


def train_nnunet(cfg: ExperimentConfig, run_dir: Path, suite: str = "adhoc") -> RunResult:
    """The nnU-Net engine's train(): see the module docstring."""
    version = require_nnunet()
    opts, run_dir = cfg.nnunet, Path(run_dir)
    trainer = pick_trainer(opts.trainer, cfg.trainer.epochs)
    device, device_env = pick_device(cfg.trainer)
    dm = SegmentationDataModule(cfg.dataset.model_copy(update={"cache": False}), cfg.trainer.batch_size,
                                cfg.trainer.seed, cfg.num_classes)
    dm.setup()
    where = NnUNetFolders(run_dir, cfg, trainer)
    state = _fresh_state(where, cfg)
    info = {"status": "running", "run": run_dir.name, "suite": suite, "experiment": cfg.name,
            "config_hash": cfg.config_hash(), "seed": cfg.trainer.seed, "started": _now(),
            "data_manifest": dm.manifest_hash, "engine": "nnunet", **provenance()}
    info["versions"]["nnunetv2"] = version
    _write_start(run_dir, cfg, info)

    env, log = where.env(device_env, opts.workers), where.home / "nnunet.log"
    plan_env = where.env(device_env, None if opts.workers is None else max(1, opts.workers))  # its planner needs >= 1
    procs = opts.workers if opts.workers is not None else min(8, os.cpu_count() or 1)
    base = {"dataset_id": DATASET_ID, "configuration": opts.configuration, "plans": opts.plans,
            "seed": cfg.trainer.seed, "device": device, "processes": procs}
    threshold = dm.layout.mask_threshold
    export_raw(dm.parts, where.raw, cfg.dataset.image_size, threshold, where.name)
    if not (where.preprocessed / "lesionbench.done").is_file():
        shutil.rmtree(where.preprocessed, ignore_errors=True)
        run_step("plan", {**base, "processes": max(1, procs)}, plan_env, log)
        write_splits(where.preprocessed, dm.train_ids, dm.val_ids)
        atomic_write_text(where.preprocessed / "lesionbench.done", "")
    fold = where.model / "fold_0"
    if not ((fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()):
        seconds = run_step("train", {**base, "trainer": trainer, "iterations_per_epoch": opts.iterations_per_epoch,
                                     "val_iterations": opts.val_iterations}, env, log)
        state["train_time_s"] += seconds
        atomic_write_json(where.home / "state.json", state)
    if not (where.predictions / "lesionbench.done").is_file():
        shutil.rmtree(where.predictions, ignore_errors=True)
        run_step("predict", {**base, "model_folder": str(where.model), "images": str(where.raw / "imagesTs"),
                             "output": str(where.predictions), "image_size": cfg.dataset.image_size}, env, log)
        atomic_write_text(where.predictions / "lesionbench.done", "")

    metrics, rows = score(dm.parts["test"], where.predictions, threshold, cfg.dataset.name, dm.class_names,
                          where.masks)
    val = read_json(fold / "validation" / "summary.json").get("foreground_mean", {}).get("Dice")
    checkpoint = str((fold / "checkpoint_final.pth").relative_to(run_dir))
    nnunet = {"version": version, "trainer": trainer, "epochs": _epochs(trainer), "plans": opts.plans,
              "configuration": opts.configuration, "chosen": plans_summary(where.model, opts.configuration),
              "raw": str(where.raw), "preprocessed": str(where.preprocessed), "device": device,
              "iterations_per_epoch": opts.iterations_per_epoch or 250}
    metrics.update({
        "experiment": cfg.name, "run": run_dir.name, "suite": suite, "dataset": cfg.dataset.name,
        "model": f"nnunet:{opts.configuration}/{opts.plans}/{trainer}", "seed": cfg.trainer.seed,
        "config_hash": cfg.config_hash(), "n_test": len(rows), "image_size": cfg.dataset.image_size,
        "best_val": {"val/dice": val}, "published": [p.model_dump() for p in cfg.published],
        "cost": {**read_json(where.predictions / "cost.json"), "train_time_s": round(state["train_time_s"], 2)},
        "best_checkpoint": checkpoint, "phases": ["nnunet"], "last_phase": "nnunet", "engine": "nnunet",
        "nnunet": nnunet,
    })
    info.update(nnunet=nnunet, train_time_s=round(state["train_time_s"], 2), best_checkpoint=checkpoint)
    return RunResult(run_dir, "finished", metrics=_write_finished(run_dir, info, metrics, rows), best_val=val)


def _epochs(trainer: str) -> int | None:
    m = re.fullmatch(r"nnUNetTrainer(?:_(\d+)epochs?)?", trainer)
    return None if m is None else int(m.group(1) or 1000)


def _fresh_state(where: NnUNetFolders, cfg: ExperimentConfig) -> dict[str, Any]:
    """Work made for another config (or by a crashed older layout) is removed, never mixed in."""
    path = where.home / "state.json"
    try:
        state = read_json(path)
    except (OSError, ValueError):
        state = {}
    if state.get("config_hash") != cfg.config_hash():
        for folder in {where.home, where.data, where.masks}:
            shutil.rmtree(folder, ignore_errors=True)
        state = {"config_hash": cfg.config_hash(), "train_time_s": 0.0}
        atomic_write_json(path, state)
    return state


# ---- run-folder writes: the same helpers and files as training/run.py (swap for runfolder.py in one place)

def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_start(run_dir: Path, cfg: ExperimentConfig, info: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    write_run_info(run_dir, RunInfo.model_validate(info))


def _write_finished(run_dir: Path, info: dict[str, Any], metrics: dict[str, Any],
                    rows: list[dict[str, Any]]) -> RunMetrics:
    """Through the run-folder contract (lesionbench/runfolder.py); metrics.json last, as train() does."""
    write_per_image(run_dir, [PerImageRow.model_validate(r) for r in rows])
    info.update(status="finished", finished=_now())
    write_run_info(run_dir, RunInfo.model_validate(info))
    checked = RunMetrics.model_validate(metrics)
    write_metrics(run_dir, checked)
    return checked
