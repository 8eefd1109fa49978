"""The run lifecycle on tiny real trainings: what a finished folder keeps, resume, stale results,
corrupt and hostile checkpoints, a full disk."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from runs import fake_run

from lesionbench.config import ExperimentConfig
from lesionbench.errors import LesionBenchError
from lesionbench.lifecycle import is_finished
from lesionbench.runfolder import read_metrics, read_run_info
from lesionbench.training.run import train


def tiny(lr: float = 1e-3, epochs: int = 2) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "tiny", "dataset": {"name": "synthetic", "image_size": 32, "augmentation": "none"},
        "model": {"name": "unet", "options": {"base_channels": 8}}, "optimizer": {"lr": lr},
        "trainer": {"epochs": epochs, "batch_size": 4, "accelerator": "cpu", "devices": 1},
    })


class _Crash(Callback):
    """Dies as the second epoch starts, after Lightning saved the first one's last.ckpt (a crash mid-run)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


class _Evil:
    """Unpickling this runs a shell command: what a planted checkpoint does to weights_only=False."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _lrs(run: Path) -> list[float]:
    return pd.read_csv(run / "logs" / "metrics.csv")["lr-Adam"].dropna().tolist()


@pytest.fixture(scope="module")
def crashed(tiny_synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of tiny() that died after its first epoch (last.ckpt and best.ckpt on disk)."""
    run = tmp_path_factory.mktemp("crashed") / "adhoc" / "tiny__s42"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LESIONBENCH_SYNTHETIC", str(tiny_synthetic))
        mp.setenv("LESIONBENCH_WORKDIR", str(run.parents[1] / "work"))
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(tiny(), run, callbacks=[_Crash()], progress=False)
    assert (run / "checkpoints" / "0-train" / "last.ckpt").is_file()
    return run


def _copy(crashed: Path, tmp_path: Path) -> Path:
    run = tmp_path / "adhoc" / crashed.name
    shutil.copytree(crashed, run)
    return run


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_finished_run_keeps_only_safetensors_and_a_changed_config_retrains_aside(
        synthetic_env: Path, tmp_path: Path) -> None:
    run = tmp_path / "adhoc" / "tiny__s42"
    train(tiny(), run, progress=False)
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert "model.safetensors" in files and "config.yaml" in files
    assert not [f for f in files if f.endswith(".ckpt")] and not (run / "checkpoints").exists(), files
    info = read_run_info(run)
    assert info.best_checkpoint == "model.safetensors" and not info.resumed and info.resume_count == 0
    assert info.determinism.requested is False and info.determinism.granted is False and info.determinism.seed == 42
    assert is_finished(run, tiny())
    old_metrics = (run / "metrics.json").read_text()

    changed = tiny(lr=5e-3)  # `--set optimizer.lr=5e-3` on a finished run
    assert not is_finished(run, changed)
    train(changed, run, progress=False)
    assert read_metrics(run).config_hash == changed.config_hash() and set(_lrs(run)) == {5e-3}
    aside = list((run.parent / "superseded").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith(f"tiny__s42.old-{tiny().config_hash()}-")
    assert (aside[0] / "metrics.json").read_text() == old_metrics and (aside[0] / "model.safetensors").is_file()
    (run / "model.safetensors").rename(run / "moved")  # results without weights are re-made, not skipped
    assert not is_finished(run, changed)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_counts_time_once_and_logs_each_epoch_once(crashed: Path, synthetic_env: Path, tmp_path: Path) -> None:
    run = _copy(crashed, tmp_path)
    before = torch.load(run / "checkpoints" / "0-train" / "last.ckpt", weights_only=True)["lesionbench"]
    train(tiny(), run, progress=False)
    info = read_run_info(run)
    assert info.resumed and info.resume_count == 1 and info.status == "finished"
    assert info.train_time_s >= round(before["train_seconds"], 2) > 0
    log = pd.read_csv(run / "logs" / "metrics.csv")
    assert log.dropna(subset=["val/dice"])["epoch"].tolist() == [0, 1]
    assert log.dropna(subset=["train/loss"])["epoch"].tolist() == [0, 1]
    assert not log.dropna(subset=["lr-Adam"])["step"].duplicated().any()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_interrupted_run_with_a_changed_lr_uses_the_new_lr(crashed: Path, synthetic_env: Path, tmp_path: Path) -> None:
    run = _copy(crashed, tmp_path)
    train(tiny(lr=5e-3), run, progress=False)
    assert set(_lrs(run)) == {5e-3} and not read_run_info(run).resumed
    (aside,) = (run.parent / "superseded").iterdir()
    assert (aside / "checkpoints" / "0-train" / "last.ckpt").is_file()  # the old state, kept


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_truncated_checkpoint_falls_back_and_names_the_file(crashed: Path, synthetic_env: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    run = _copy(crashed, tmp_path)
    last = run / "checkpoints" / "0-train" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        train(tiny(), run, progress=False)
    assert read_run_info(run).status == "finished" and read_run_info(run).resumed  # from best.ckpt
    assert any(str(last) in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_hostile_last_checkpoint_is_refused_on_resume(crashed: Path, synthetic_env: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    run = _copy(crashed, tmp_path)
    marker = tmp_path / "pwned"
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = torch.load(run / "checkpoints" / "0-train" / name, weights_only=True)
        torch.save({**ckpt, "payload": _Evil(marker)}, run / "checkpoints" / "0-train" / name)
    with caplog.at_level(logging.WARNING):
        train(tiny(), run, progress=False)
    assert not marker.exists()
    assert read_run_info(run).status == "finished" and not read_run_info(run).resumed  # restarted the phase
    assert any("last.ckpt: refused" in r.getMessage() and "posix.system" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(120)
def test_hostile_checkpoint_in_a_run_folder_is_refused_by_predict(tmp_path: Path) -> None:
    from lesionbench.inference.predict import predict_files
    from lesionbench.runfolder import read_metrics, write_metrics

    run = fake_run(tmp_path / "run", tiny())
    marker, evil = tmp_path / "pwned", run / "checkpoints" / "best.ckpt"
    evil.parent.mkdir()
    torch.save({"state_dict": {}, "hyper_parameters": {"config": tiny().model_dump(mode="json")},
                "payload": _Evil(marker)}, evil)
    write_metrics(run, read_metrics(run).model_copy(update={"best_checkpoint": "checkpoints/best.ckpt"}))
    image = tmp_path / "a.png"
    from PIL import Image
    Image.new("RGB", (40, 30)).save(image)
    with pytest.raises(LesionBenchError) as err:
        predict_files(run, [image], tmp_path / "out")
    assert not marker.exists()
    assert str(evil) in str(err.value) and "\n" not in str(err.value) and "posix.system" in str(err.value)
    torch.load(evil, weights_only=False)  # the file is real: the old loader would have run it
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_full_disk_marks_the_run_failed_with_the_space_needed(synthetic_env: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch import Trainer

    from lesionbench.studies.suite import PlannedRun, run_all

    def full(self, filepath, *args, **kwargs) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))

    monkeypatch.setattr(Trainer, "save_checkpoint", full)
    statuses = run_all([PlannedRun("tiny__s42", tiny(epochs=1))], tmp_path / "out", "s")
    run = tmp_path / "out" / "tiny__s42"
    info = read_run_info(run)
    assert statuses == {"tiny__s42": "failed"} and info.status == "failed"
    assert str(run) in info.error and "no space left" in info.error and "MB free" in info.error
    assert "MB (best + last checkpoint)" in info.error
    assert not list(run.rglob(".*.*"))  # no temp files left behind


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_determinism_requested_and_granted_are_recorded(synthetic_env: Path, tmp_path: Path) -> None:
    base = tiny(epochs=1)
    cfg = base.model_copy(update={"trainer": base.trainer.model_copy(update={"deterministic": True, "seed": 7})})
    try:
        train(cfg, tmp_path / "det", progress=False)
    finally:
        torch.use_deterministic_algorithms(False)  # Lightning sets it process-wide
    det = read_run_info(tmp_path / "det").determinism
    assert det.requested is True and det.granted is True and det.seed == 7
