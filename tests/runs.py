"""A finished-looking run folder around an untrained task: for tests of what reads run folders."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lesionbench.config import ExperimentConfig


def fake_run(run_dir: Path, cfg: ExperimentConfig) -> Path:
    """config.yaml + model.safetensors + run.json + metrics.json + per_image.csv, as train() leaves
    them (written through the run-folder models), around an untrained task (fast)."""
    from safetensors.torch import save_model

    from lesionbench.metrics.scores import summarize
    from lesionbench.runfolder import WEIGHTS
    from lesionbench.training.task import SegmentationTask

    task = SegmentationTask(cfg.model_dump(mode="json"))
    run_dir.mkdir(parents=True)
    save_model(task.model, str(run_dir / WEIGHTS))
    ids = ["img0", "img1"]
    stats = torch.tensor([[[1.0, 1.0, 1.0, 1.0]] * cfg.num_classes] * len(ids))  # tp, fp, fn, tn per image
    summary, rows = summarize(stats, ids, cfg.dataset.name, [f"class{i}" for i in range(cfg.num_classes)])
    return write_scored_run(run_dir, experiment=cfg.name, dataset=cfg.dataset.name, seed=cfg.trainer.seed, rows=rows,
                            metrics={**summary, "image_size": cfg.dataset.image_size}, model=cfg.model.name,
                            config_yaml=cfg.to_yaml(), config_hash=cfg.config_hash())


def write_scored_run(run_dir: Path, *, experiment: str, dataset: str, seed: int, rows: list[dict],
                     metrics: dict, model: str = "smp:Unet/resnet18", info: dict | None = None,
                     config_yaml: str | None = None, config_hash: str = "0" * 16) -> Path:
    """A finished run folder with the given per-image rows and metrics.json sections, written through
    the run-folder models (as train() writes them), for tests of what reads scores."""
    from lesionbench.runfolder import (
        WEIGHTS,
        PerImageRow,
        RunInfo,
        RunMetrics,
        write_metrics,
        write_per_image,
        write_run_info,
    )

    run_dir.mkdir(parents=True, exist_ok=True)
    ident = {"run": run_dir.name, "experiment": experiment, "config_hash": config_hash, "seed": seed}
    if config_yaml is not None:
        (run_dir / "config.yaml").write_text(config_yaml)
    write_run_info(run_dir, RunInfo.model_validate({"status": "finished", "best_checkpoint": WEIGHTS, **ident,
                                                    **(info or {})}))
    write_metrics(run_dir, RunMetrics.model_validate({**ident, "dataset": dataset, "model": model, "n_test": len(rows),
                                                      "best_checkpoint": WEIGHTS, **metrics}))
    write_per_image(run_dir, [PerImageRow.model_validate(r) for r in rows])
    return run_dir


def write_failed_run(run_dir: Path, *, experiment: str, seed: int, error: str) -> Path:
    """A run folder whose run.json says failed, written through the run-folder model."""
    from lesionbench.runfolder import RunInfo, write_run_info

    run_dir.mkdir(parents=True)
    write_run_info(run_dir, RunInfo(status="failed", run=run_dir.name, experiment=experiment,
                                    config_hash="0" * 16, seed=seed, error=error))
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


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`lesionbench ARGS` through the real entry point (its error handling included): (exit code, stderr)."""
    from lesionbench.cli import main

    monkeypatch.setattr(sys, "argv", ["lesionbench", *args])
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as ended:
            main()
    finally:
        signal.signal(signal.SIGINT, handler)
    return ended.value.code, capsys.readouterr().err


def center_logits() -> object:
    """A Lightning callback that, as the test loop starts, shifts the network's last bias so the median
    test logit is 0: about half of all test pixels become foreground, so the masks are neither empty
    nor full and per-image scores differ, whatever a short training learned on this CPU (issue 29.1).
    The shifted weights are the ones tested and saved, so every parity check downstream still holds."""
    from lightning.pytorch.callbacks import Callback

    class CenterLogits(Callback):
        def on_test_start(self, trainer, pl_module) -> None:  # noqa: ANN001 (Lightning's hook signature)
            net = pl_module.model
            last = [m for m in net.head.modules() if isinstance(getattr(m, "bias", None), torch.Tensor)][-1]
            logits = []
            net.eval()
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                for batch in trainer.datamodule.test_dataloader():
                    out = net(batch["image"].to(pl_module.device))
                    logits.append(out.float().flatten())
            last.bias.data -= torch.cat(logits).median().to(last.bias.dtype)

    return CenterLogits()
