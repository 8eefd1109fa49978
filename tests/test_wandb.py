"""W&B logging, offline (no network, no key): run files, metrics and prediction images on disk."""

from __future__ import annotations

import csv
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from lesionbench.config import ExperimentConfig
from lesionbench.io import read_json
from lesionbench.training.loggers import finish_wandb, run_name
from lesionbench.training.run import train


def _wait_for_history(path: Path, key: str, seconds: float = 20.0) -> list[dict[str, Any]]:
    """History rows once ``key`` is among them: wandb's service process flushes the file on its own time."""
    deadline = time.monotonic() + seconds
    while True:
        rows = _records(path, "history")
        if any(key in h for h in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def _records(path: Path, kind: str) -> list[dict[str, Any]]:
    """``history`` rows or ``config`` updates of an offline ``run-*.wandb`` file (LevelDB-style blocks of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, buf, rows, block = path.read_bytes(), 7, b"", [], 32768
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, size, chunk = struct.unpack("<IHB", raw[pos:pos + 7])
        buf, pos = buf + raw[pos + 7:pos + 7 + size], pos + 7 + size
        if chunk in (1, 4):  # a full record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            if rec.WhichOneof("record_type") == kind:
                items = rec.history.item if kind == "history" else rec.config.update
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return rows


def tiny(root: Path, subset: int = 4, epochs: int = 2) -> ExperimentConfig:
    """The ISIC 2018 replica of the tiny synthetic data; logger: wandb."""
    return ExperimentConfig.model_validate({
        "name": "wb", "dataset": {"name": "isic2018", "root": str(root), "image_size": 32, "augmentation": "none",
                                  "subset": subset},
        "model": {"name": "unet", "options": {"base_channels": 8}},
        "trainer": {"epochs": epochs, "batch_size": 2, "accelerator": "cpu", "devices": 1, "logger": "wandb", "seed": 7},
    })


@pytest.mark.slow
def test_offline_wandb_run_writes_metrics_tables_and_images(synthetic_env: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = tiny(synthetic_env)
    run_dir = tmp_path / "suite-x" / "wb__s7"
    train(cfg, run_dir, suite="suite-x", progress=False)
    import wandb

    assert wandb.run is None, "the run owns its W&B run and closes it when it ends"
    finish_wandb()
    assert "WANDB_MODE" not in os.environ, "offline mode is this run's, not the process's"
    out = capsys.readouterr().out
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert f"wandb sync {offline}" in out and out.count("wandb sync") == 1
    assert list(offline.glob("run-*.wandb")), "the offline run log to sync later"
    files = offline / "files"
    history = _wait_for_history(next(offline.glob("run-*.wandb")), "test/predictions/count")
    val = [(int(h["epoch"]), h["val/dice"]) for h in history if "val/dice" in h]
    with open(run_dir / "logs" / "metrics.csv") as fh:  # the same per-epoch numbers as the CSV log
        rows = [r for r in csv.DictReader(fh) if r["val/dice"]]
    assert val == [(int(r["epoch"]), pytest.approx(float(r["val/dice"]))) for r in rows] and len(val) == 2
    assert any("train/loss" in h for h in history)
    images = list((files / "media" / "images").rglob("*.png"))
    n_test = read_json(run_dir / "metrics.json")["n_test"]
    # each test image with prediction and ground-truth masks (identical masks are stored once)
    assert len([p for p in images if "mask" not in p.parts]) == n_test
    assert [p for p in images if p.name.endswith(".mask.png")]
    panel = next(h for h in history if "test/predictions/count" in h)
    assert panel["test/predictions/count"] == n_test
    assert {"prediction", "ground_truth"} <= set(panel["test/predictions/all_masks"][0])
    (table,) = (files / "media" / "table").rglob("per_image*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"][:2] == ["id", "dice"] and len(data["data"]) == n_test
    per_image = {r[0]: r[1] for r in data["data"]}
    with open(run_dir / "per_image.csv") as fh:
        assert {r["id"]: pytest.approx(float(r["dice"])) for r in csv.DictReader(fh)} == per_image
    assert (run_dir / "logs" / "metrics.csv").is_file(), "CSV logging stays on"
    config = {k: v for update in _records(next(offline.glob("run-*.wandb")), "config") for k, v in update.items()}
    assert config["model"]["name"] == "unet" and config["dataset"]["name"] == "isic2018"  # the resolved config
    assert run_name(cfg, run_dir) == "wb__s7" and run_name(cfg, tmp_path / "study" / "trial-3") == "wb__s7__trial-3"


@pytest.mark.slow
def test_wandb_failure_falls_back_to_csv(synthetic_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys) -> None:
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("network is unreachable")

    monkeypatch.setattr(wandb, "init", broken)
    cfg = tiny(synthetic_env, subset=2, epochs=1)
    result = train(cfg, tmp_path / "r" / "wb__s7", progress=False)
    assert result.status == "finished" and (tmp_path / "r" / "wb__s7" / "logs" / "metrics.csv").is_file()
    err = capsys.readouterr().err
    assert "W&B unavailable (network is unreachable); logging to CSV only" in err
