"""Read-only folders (issue 18.15): one line saying where things went, or what to change."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

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
