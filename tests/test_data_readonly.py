"""Read-only folders (issues 18.15, 23.11): one line saying where things went, or what to change.

Tests here run as root, whom ``chmod 0o555`` does not stop: a read-only folder is simulated by making
every write under it (open for writing, os.open with a write flag, mkdir) fail with EROFS, as a
read-only mount does.
"""

from __future__ import annotations

import builtins
import errno
import io
import logging
import os
from pathlib import Path

import pytest
from runs import run_cli

from lesionbench.config import DatasetConfig
from lesionbench.data import SegmentationDataModule
from lesionbench.data.synthetic import write_all
from lesionbench.errors import LesionBenchError


def test_read_only_dataset_root_says_where_splits_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    import lesionbench.data.datamodule as dmod
    root = write_all(tmp_path / "data", seed=1, counts={"isic2018": {"train": 4, "val": 1, "test": 1}},
                     size=(40, 48), datasets=("isic2018",)) / "isic2018"
    monkeypatch.delenv("LESIONBENCH_WORKDIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    real = dmod.os.access
    # chmod cannot stop root (who runs CI here): the dataset root answers "not writable" as a read-only mount does
    monkeypatch.setattr(dmod.os, "access", lambda p, mode: False if Path(p) == root else real(p, mode))
    with caplog.at_level(logging.WARNING, logger="lesionbench.data.datamodule"):
        dm = SegmentationDataModule(DatasetConfig(name="isic2018", root=str(root), image_size=16), batch_size=2)
        dm.setup()
    lines = [r.getMessage() for r in caplog.records if "read-only" in r.getMessage()]
    assert len(lines) == 1 and str(root) in lines[0] and str(tmp_path / "home" / ".cache" / "lesionbench") in lines[0]
    assert dm.work.is_relative_to(tmp_path / "home" / ".cache" / "lesionbench")
    assert any((dm.work / "splits").iterdir()) and not (root / ".lesionbench").exists()


def test_unwritable_synthetic_root_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the replica should go")
    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", str(blocker))
    with pytest.raises(LesionBenchError) as err:
        SegmentationDataModule(DatasetConfig(name="synthetic", image_size=16), batch_size=2).setup()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{blocker}: cannot write the synthetic replica")
    assert "LESIONBENCH_SYNTHETIC" in msg


def read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    """Writes under ``folder`` fail with EROFS (reads, and mkdir of what exists, behave as on a read-only mount)."""
    folder = folder.absolute()
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def inside(path: object) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and Path(os.fsdecode(path)).absolute().is_relative_to(folder)

    def refuse(path: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if set(str(mode)) & set("wax+") and inside(file):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path) and not os.path.exists(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    return folder


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _experiment(tmp_path: Path) -> Path:
    exp = tmp_path / "tiny.yaml"
    exp.write_text("name: tiny\ndataset: {name: isic2018, root: synthetic, image_size: 32}\n"
                   "model: {name: unet, options: {base_channels: 8}}\n"
                   "trainer: {epochs: 1, batch_size: 4, accelerator: cpu, devices: 1}\n")
    return exp


@pytest.mark.timeout(120)
def test_data_synth_into_a_read_only_folder_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    read_only(monkeypatch, out)
    code, err = run_cli(monkeypatch, capsys, "data", "synth", "--out", str(out))
    line = _one_line(err)
    assert code == 2 and line.startswith(f"error: {out}: cannot write the synthetic replica there (Read-only")
    assert "--out" in line and not any(out.iterdir())


@pytest.mark.timeout(120)
def test_run_into_a_read_only_out_folder_is_one_line(synthetic_env: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    exp = _experiment(tmp_path)
    read_only(monkeypatch, out)
    code, err = run_cli(monkeypatch, capsys, "run", str(exp), "--out", str(out))
    line = _one_line(err)
    assert code == 2 and line.startswith(f"error: {out}: cannot write there (Read-only file system); "), line
    assert "--out" in line and not any(out.iterdir())


@pytest.mark.timeout(120)
def test_read_only_synthetic_folder_without_a_replica_is_one_line(synthetic_env: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    replica = tmp_path / "ro"
    replica.mkdir()
    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", str(replica))
    exp = _experiment(tmp_path)
    read_only(monkeypatch, replica)
    code, err = run_cli(monkeypatch, capsys, "run", str(exp), "--synthetic", "--quick", "--out", str(tmp_path / "out"))
    line = _one_line(err)
    assert code == 2 and line.startswith(f"error: {replica}: cannot write the synthetic replica there (Read-only"), line
    assert "$LESIONBENCH_SYNTHETIC" in line and not any(replica.iterdir())
