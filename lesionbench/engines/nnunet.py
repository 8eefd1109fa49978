"""engine: nnunet: nnU-Net v2 plans, trains and predicts; our split goes in, our metrics come out.

Steps, each skipped when its output is complete, so a killed run resumes (training from nnU-Net's
latest checkpoint) or restarts the interrupted step cleanly: export our split -> plan and
preprocess (2d) -> train fold 0 (+ nnU-Net's validation) -> determine postprocessing on fold 0's
validation as ``nnUNetv2_find_best_configuration -f 0`` does -> predict the test split -> apply that
postprocessing and score with LesionBench's metrics at original size -> the same run folder files as
every other run.

Budget: nnU-Net's epoch is 250 batches whatever the data; by default (``nnunet.budget: recipe``) its
iterations per epoch are set so that it sees about as many training images as a Lightning run of the
recipe (trainer.epochs x training images); ``cost.images_seen`` records what it saw, run.json the ratio.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lesionbench.config import ExperimentConfig
from lesionbench.data.datamodule import SegmentationDataModule
from lesionbench.data.decode import hw
from lesionbench.engines.nnunet_data import export_raw, score, write_splits
from lesionbench.engines.nnunet_setup import (
    DATASET_ID,
    NnUNetFolders,
    augmentation_workers,
    pick_device,
    pick_trainer,
    require_nnunet,
)
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_json, atomic_write_text, read_json
from lesionbench.lifecycle import finish_run, set_aside_if_stale, start_run
from lesionbench.runfolder import RunResult

#: The weights a finished run keeps (nnU-Net's trained-model layout, read by its predictor); its other
#: checkpoints (best, latest) are deleted once the run is finished.
FINAL = "checkpoint_final.pth"


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
    set_aside_if_stale(run_dir, cfg)
    state = _fresh_state(where, cfg)
    info = start_run(run_dir, cfg, suite, engine="nnunet", versions={"nnunetv2": version},
                     data_manifest=dm.manifest_hash)

    workers, repro = augmentation_workers(opts.workers, device)
    if not repro["reproducible"]:
        warnings.warn(f"{run_dir.name}: this nnU-Net run is not reproducible: {repro['why_not']}", stacklevel=2)
    env, log = where.env(device_env, workers), where.home / "nnunet.log"
    plan_env = where.env(device_env, None if workers is None else max(1, workers))  # its planner needs >= 1
    procs = workers if workers is not None else min(8, os.cpu_count() or 1)
    base = {"dataset_id": DATASET_ID, "configuration": opts.configuration, "plans": opts.plans,
            "seed": cfg.trainer.seed, "device": device, "processes": procs}
    threshold = dm.layout.mask_threshold
    export_raw(dm.parts, where.raw, None if opts.native_resolution else cfg.dataset.image_size, threshold, where.name)
    recipe_images = cfg.trainer.epochs * len(dm.train_ids)  # what a Lightning run of the recipe sees
    if not (where.preprocessed / "lesionbench.done").is_file():
        shutil.rmtree(where.preprocessed, ignore_errors=True)
        run_step("plan", {**base, "processes": max(1, procs)}, plan_env, log)
        write_splits(where.preprocessed, dm.train_ids, dm.val_ids)
        atomic_write_text(where.preprocessed / "lesionbench.done", "")
    fold = where.model / "fold_0"
    if not ((fold / FINAL).is_file() and (fold / "validation" / "summary.json").is_file()):
        seconds = run_step("train", {**base, "trainer": trainer, "iterations_per_epoch": opts.iterations_per_epoch,
                                     "recipe_images": recipe_images if opts.budget == "recipe" else None,
                                     "val_iterations": opts.val_iterations}, env, log)
        state["train_time_s"] += seconds
        atomic_write_json(where.home / "state.json", state)
    crossval = where.model / "crossval_results_folds_0"
    if opts.postprocessing and not (crossval / "postprocessing.json").is_file():
        run_step("postprocess", {**base, "trainer": trainer}, env, log)
    chosen = plans_summary(where.model, opts.configuration)
    if not (where.predictions / "lesionbench.done").is_file():
        shutil.rmtree(where.predictions, ignore_errors=True)
        cost_size = chosen["patch_size"] if opts.native_resolution else cfg.dataset.image_size  # what one window is
        run_step("predict", {**base, "model_folder": str(where.model), "images": str(where.raw / "imagesTs"),
                             "output": str(where.predictions), "image_size": cost_size}, env, log)
        atomic_write_text(where.predictions / "lesionbench.done", "")

    metrics, rows = score(dm.parts["test"], where.predictions, threshold, cfg.dataset.name, dm.class_names,
                          where.masks, crossval / "postprocessing.pkl" if opts.postprocessing else None)
    val = read_json(fold / "validation" / "summary.json").get("foreground_mean", {}).get("Dice")
    checkpoint = str((fold / FINAL).relative_to(run_dir))
    budget = _budget(fold / "lesionbench_budget.json", recipe_images, opts.budget, opts.iterations_per_epoch)
    if budget["ratio"] is not None and abs(budget["ratio"] - 1) > 0.1:
        warnings.warn(f"{run_dir.name}: nnU-Net saw {budget['ratio']:.2f}x the recipe's training images "
                      f"({budget['images_seen']} vs {recipe_images})", stacklevel=2)
    nnunet = {"version": version, "trainer": trainer, "epochs": budget["epochs"] or _epochs(trainer),
              "plans": opts.plans, "configuration": opts.configuration, "chosen": chosen,
              "raw": str(where.raw), "preprocessed": str(where.preprocessed), "device": device,
              "iterations_per_epoch": budget["iterations_per_epoch"], "input": _input(cfg, opts.native_resolution),
              "budget": budget, "postprocessing": _postprocessing(crossval, opts.postprocessing), **repro}
    metrics.update({
        "experiment": cfg.name, "run": run_dir.name, "suite": suite, "dataset": cfg.dataset.name,
        "model": f"nnunet:{opts.configuration}/{opts.plans}/{trainer}", "seed": cfg.trainer.seed,
        "config_hash": cfg.config_hash(), "n_test": len(rows), "image_size": cfg.dataset.image_size,
        "best_val": {"val/dice": val}, "published": [p.model_dump() for p in cfg.published],
        "cost": {**read_json(where.predictions / "cost.json"), "train_time_s": round(state["train_time_s"], 2),
                 "images_seen": budget["images_seen"]},
        "best_checkpoint": checkpoint, "phases": ["nnunet"], "last_phase": "nnunet", "engine": "nnunet",
        "nnunet": nnunet,
    })
    _keep_final_weights(fold)
    done = finish_run(run_dir, info, metrics, rows, nnunet=nnunet, train_time_s=round(state["train_time_s"], 2),
                      best_checkpoint=checkpoint)
    return RunResult(run_dir, "finished", metrics=done, best_val=val)


def _keep_final_weights(fold: Path) -> None:
    """A finished run keeps nnU-Net's final weights only (as other runs keep theirs): its best and
    latest checkpoints, each as large, are needed by nothing once training and validation are done."""
    for path in fold.glob("checkpoint_*.pth"):
        if path.name != FINAL:
            path.unlink(missing_ok=True)


def _input(cfg: ExperimentConfig, native: bool) -> str:
    """What nnU-Net planned and trained on (run.json's nnunet.input; the leaderboard says it under the table)."""
    if native:
        return "native resolution (each image at its own size)"
    h, w = hw(cfg.dataset.image_size)
    return f"resized to {h}x{w}" if h == w else f"resized to {h}x{w} (HxW)"


def _budget(path: Path, recipe_images: int, mode: str, explicit: int | None) -> dict[str, Any]:
    """Training images nnU-Net drew (epochs x iterations x batch, as its trainer reported them) against
    the recipe's (trainer.epochs x training images); how the iterations were chosen."""
    try:
        got = read_json(path)
    except (OSError, ValueError):
        got = {}
    seen = got.get("images_seen")
    how = "nnunet.iterations_per_epoch" if explicit else "matched to the recipe" if mode == "recipe" else "nnU-Net's own"
    return {"epochs": got.get("epochs"), "iterations_per_epoch": got.get("iterations_per_epoch"),
            "batch_size": got.get("batch_size"), "images_seen": seen, "recipe_images": recipe_images,
            "ratio": round(seen / recipe_images, 3) if seen and recipe_images else None, "iterations": how}


def _postprocessing(crossval: Path, wanted: bool) -> dict[str, Any]:
    """What nnU-Net chose on fold 0's validation (its postprocessing.json) and whether the test masks got it."""
    if not wanted:
        return {"applied": False, "why": "nnunet.postprocessing: false"}
    chosen = read_json(crossval / "postprocessing.json")
    fns = chosen.get("postprocessing_fns", [])
    dice = {k: chosen.get(k, {}).get("foreground_mean", {}).get("Dice") for k in ("input_folder", "postprocessed")}
    return {"applied": bool(fns), "determined_on": "fold 0 validation (find_best_configuration -f 0)",
            "functions": fns, "kwargs": chosen.get("postprocessing_kwargs", []),
            "val_dice_before": dice["input_folder"], "val_dice_after": dice["postprocessed"]}


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
