"""engine: nnunet: nnU-Net v2 plans, trains and predicts; our split goes in, our metrics come out.

Steps, each skipped when its output is complete, so a killed run resumes (training from nnU-Net's
latest checkpoint) or restarts the interrupted step cleanly: export our split -> plan and
preprocess (2d) -> train fold 0 (+ nnU-Net's validation) -> predict the test split -> score with
LesionBench's metrics at original size -> the same run folder files as every other run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from lesionbench.config import ExperimentConfig, TrainerConfig
from lesionbench.data.datamodule import SegmentationDataModule
from lesionbench.engines.nnunet_data import export_raw, score, write_splits
from lesionbench.errors import LesionBenchError
from lesionbench.io import atomic_write_csv, atomic_write_json, atomic_write_text, read_json
from lesionbench.training.provenance import provenance
from lesionbench.training.run import RunResult

MISSING = "engine: nnunet needs nnU-Net v2, an optional extra: pip install 'lesionbench[nnunet]'"
DATASET_ID = 500


def require_nnunet() -> str:
    """nnunetv2's version, or the one-line error naming the extra."""
    if importlib.util.find_spec("nnunetv2") is None:
        raise LesionBenchError(MISSING)
    return metadata.version("nnunetv2")


def fixed_length_trainers() -> dict[int, str]:
    """Epochs -> trainer class nnU-Net ships (nnUNetTrainer is its own 1000-epoch default)."""
    from nnunetv2.training.nnUNetTrainer.variants.training_length import nnUNetTrainer_Xepochs as variants

    table = {1000: "nnUNetTrainer"}
    for name, _ in inspect.getmembers(variants, inspect.isclass):
        if m := re.fullmatch(r"nnUNetTrainer_(\d+)epochs?", name):
            table[int(m.group(1))] = name
    return table


def pick_trainer(name: str, epochs: int) -> str:
    """``auto``: the shipped fixed-length variant closest to the recipe's epochs (ties: the shorter)."""
    if name != "auto":
        return name
    table = fixed_length_trainers()
    return table[min(table, key=lambda e: (abs(e - epochs), e))]


def pick_device(tr: TrainerConfig) -> tuple[str, dict[str, str]]:
    """(torch device type, extra environment) for the run's trainer.accelerator / devices: one device."""
    devices = tr.devices
    if tr.num_nodes > 1 or (isinstance(devices, int) and devices > 1) or (isinstance(devices, list) and len(devices) > 1):
        raise LesionBenchError(f"trainer.devices: engine nnunet trains on one device (got {devices!r}, "
                               f"{tr.num_nodes} node(s)); set trainer.devices=1")
    acc = tr.accelerator.lower()
    if acc == "auto":
        acc = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    kind = {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu", "mps": "mps"}.get(acc)
    if kind is None:
        raise LesionBenchError(f"trainer.accelerator: {tr.accelerator!r} is not one nnU-Net runs on (cpu, gpu, mps)")
    return kind, {"CUDA_VISIBLE_DEVICES": str(devices[0])} if kind == "cuda" and isinstance(devices, list) else {}


class Layout:
    """Where this run's nnU-Net folders live: data in $LESIONBENCH_WORKDIR (else the run folder),
    the trained model always in the run folder."""

    def __init__(self, run_dir: Path, cfg: ExperimentConfig, trainer: str) -> None:
        work = os.environ.get("LESIONBENCH_WORKDIR")
        key = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:8]
        self.home = run_dir / "nnunet"
        self.data = Path(work) / "nnunet" / f"{run_dir.name}-{key}" if work else self.home
        self.name = f"Dataset{DATASET_ID}_{re.sub(r'[^A-Za-z0-9]', '', cfg.dataset.name)}"
        self.raw = self.data / "raw" / self.name
        self.preprocessed = self.data / "preprocessed" / self.name
        self.model = self.home / "results" / self.name / f"{trainer}__{cfg.nnunet.plans}__{cfg.nnunet.configuration}"
        self.predictions = self.home / "predictions"

    def env(self, extra: dict[str, str], workers: int | None) -> dict[str, str]:
        env = {**os.environ, **extra, "nnUNet_raw": str(self.raw.parent),
               "nnUNet_preprocessed": str(self.preprocessed.parent), "nnUNet_results": str(self.model.parents[1])}
        if workers is not None:  # augmentation processes (0: in-process), and its other pools (at least 1)
            env.update(nnUNet_n_proc_DA=str(workers), nnUNet_def_n_proc=str(max(1, workers)))
        return env


def run_step(step: str, args: dict[str, Any], env: dict[str, str], log: Path) -> float:
    """One worker step in a child process (output appended to ``log``); its wall seconds."""
    cmd = [sys.executable, "-m", "lesionbench.engines.nnunet_worker", step, json.dumps(args)]
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n=== {step} {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
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
    where = Layout(run_dir, cfg, trainer)
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
                          run_dir / "predictions")
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
    _write_finished(run_dir, info, metrics, rows)
    return RunResult(run_dir, "finished", metrics=metrics, best_val=val)


def _epochs(trainer: str) -> int | None:
    m = re.fullmatch(r"nnUNetTrainer(?:_(\d+)epochs?)?", trainer)
    return None if m is None else int(m.group(1) or 1000)


def _fresh_state(where: Layout, cfg: ExperimentConfig) -> dict[str, Any]:
    """Work made for another config (or by a crashed older layout) is removed, never mixed in."""
    path = where.home / "state.json"
    try:
        state = read_json(path)
    except (OSError, ValueError):
        state = {}
    if state.get("config_hash") != cfg.config_hash():
        for folder in {where.home, where.data}:
            shutil.rmtree(folder, ignore_errors=True)
        state = {"config_hash": cfg.config_hash(), "train_time_s": 0.0}
        atomic_write_json(path, state)
    return state


# ---- run-folder writes: the same helpers and files as training/run.py (swap for runfolder.py in one place)

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_start(run_dir: Path, cfg: ExperimentConfig, info: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    atomic_write_json(run_dir / "run.json", info)


def _write_finished(run_dir: Path, info: dict[str, Any], metrics: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    atomic_write_csv(run_dir / "per_image.csv", rows)
    atomic_write_json(run_dir / "metrics.json", metrics)
    info.update(status="finished", finished=_now())
    atomic_write_json(run_dir / "run.json", info)
