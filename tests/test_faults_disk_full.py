"""A full disk (issue 23.10): run.json says failed with the reason, a checkpoint the disk cut short is
removed, the weights and the leaderboard that find no room are one line naming the folder and the
sizes, never a traceback.

The disk is simulated, not filled: files that lesionbench.io makes under a folder write into
/dev/full, so the ENOSPC they meet is the kernel's own; a checkpoint write stops halfway and raises
ENOSPC, as a copy onto a full disk does.
"""

from __future__ import annotations

import errno
import io
import os
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from runs import run_cli

from lesionbench.config import ExperimentConfig
from lesionbench.io import DiskFullError
from lesionbench.runfolder import read_run_info

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.is_char_device(), reason="needs the /dev/full device (Linux)")


def tiny(epochs: int = 1) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "tiny", "dataset": {"name": "synthetic", "image_size": 32, "augmentation": "none"},
        "model": {"name": "unet", "options": {"base_channels": 8}},
        "trainer": {"epochs": epochs, "batch_size": 4, "accelerator": "cpu", "devices": 1},
    })


def fill(monkeypatch: pytest.MonkeyPatch, root: Path, full: Callable[[], bool] = lambda: True) -> None:
    """While ``full()``, every temporary file made under ``root`` (lesionbench.io writes through one, then
    renames it) is created but written into /dev/full: its writes fail with the kernel's ENOSPC."""
    real, root = tempfile.mkstemp, root.absolute()

    def mkstemp(suffix=None, prefix=None, dir=None, text=False):  # noqa: A002 - tempfile's own signature
        fd, name = real(suffix, prefix, dir, text)
        if dir is not None and Path(dir).absolute().is_relative_to(root) and full():
            os.close(fd)
            fd = os.open(DEV_FULL, os.O_WRONLY)  # the name stays the real (empty) temporary file
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@needs_dev_full
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_full_disk_while_checkpointing_says_failed_and_removes_the_cut_checkpoint(
        synthetic_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.plugins import TorchCheckpointIO

    from lesionbench.studies.suite import PlannedRun, run_all

    out, cut = tmp_path / "out", []

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(buffer.getvalue()[: buffer.tell() // 2])  # stops halfway
        cut.append(Path(path))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", save_checkpoint)
    fill(monkeypatch, out, full=lambda: any(p.exists() for p in cut))  # no room while the cut file holds it
    statuses = run_all([PlannedRun("tiny__s42", tiny())], out, "s")
    run = out / "tiny__s42"
    info = read_run_info(run)
    assert statuses == {"tiny__s42": "failed"} and info.status == "failed", info
    assert str(run) in info.error and "no space left on the device writing best.ckpt" in info.error
    assert cut and not any(p.exists() for p in cut)
    assert all(zipfile.is_zipfile(p) for p in run.rglob("*.ckpt"))  # whole checkpoints only
    assert not list(run.rglob(".*.*"))  # no temporary files


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_full_disk_while_saving_the_weights_names_the_folder_and_the_sizes(
        synthetic_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch
    from safetensors import SafetensorError

    from lesionbench.training.run import train

    def no_room(*args, **kwargs) -> None:  # what safetensors raises for ENOSPC (its own error, no errno)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", no_room)
    run = tmp_path / "adhoc" / "tiny__s42"
    with pytest.raises(DiskFullError) as err:
        train(tiny(), run, progress=False)
    line = str(err.value)
    assert "\n" not in line
    assert re.match(rf"{re.escape(str(run))}: no space left on the device writing model\.safetensors: "
                    r"needs about [\d.]+ [KM]B, [\d.]+ [KMG]B free; ", line), line
    assert (run / "checkpoints").is_dir()  # the trained phase stays: a re-run with room only tests and saves
    assert not (run / "model.safetensors").exists() and not list(run.rglob(".*.*"))


@needs_dev_full
@pytest.mark.timeout(60)
def test_failure_is_recorded_in_place_when_the_disk_has_no_room_for_a_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionbench.lifecycle import record_failure, start_run

    run = tmp_path / "out" / "tiny__s42"
    started = start_run(run, tiny(), "s")
    fill(monkeypatch, tmp_path / "out")
    record_failure(run, tiny(), "s", DiskFullError(f"{run}: no space left on the device writing best.ckpt"))
    info = read_run_info(run)
    assert info.status == "failed" and info.started == started.started
    assert info.error == f"DiskFullError: {run}: no space left on the device writing best.ckpt"


@needs_dev_full
@pytest.mark.timeout(120)
def test_leaderboard_on_a_full_disk_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from runs import fake_run

    suite = tmp_path / "out" / "s"
    fake_run(suite / "tiny__s42", tiny())
    fill(monkeypatch, tmp_path / "out")
    code, err = run_cli(monkeypatch, capsys, "leaderboard", "--suite", "s", "--out", str(tmp_path / "out"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: {suite}: no space left on the device writing leaderboard"), lines[0]
    assert " free; " in lines[0]
