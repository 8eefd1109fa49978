"""A finished-looking run folder around an untrained task: for tests of what reads run folders."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

import torch

from lesionbench.config import ExperimentConfig


def fake_run(run_dir: Path, cfg: ExperimentConfig) -> Path:
    """Checkpoint + run.json + metrics.json, as train() leaves them, without training (fast)."""
    from lesionbench.training.task import SegmentationTask

    task = SegmentationTask(cfg.model_dump(mode="json"))
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save({"hyper_parameters": {"config": cfg.model_dump(mode="json")}, "state_dict": task.state_dict()},
               run_dir / "checkpoints" / "best.ckpt")
    (run_dir / "run.json").write_text(json.dumps({"status": "finished"}))
    (run_dir / "metrics.json").write_text(json.dumps({"best_checkpoint": "checkpoints/best.ckpt"}))
    return run_dir


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 240) -> None:
    """Wait (while the process lives) until ``ready()`` holds, then SIGKILL its process group."""
    import os
    import signal
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and not ready():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else "process ended early"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
