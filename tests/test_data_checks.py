"""Training applies `data verify`'s checks (issue 18.7): the same lines, once per manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionbench.config import DatasetConfig
from lesionbench.data import SegmentationDataModule
from lesionbench.data.synthetic import write_all
from lesionbench.data.verify import verify
from lesionbench.errors import LesionBenchError

COUNTS = {"isic2018": {"train": 6, "val": 2, "test": 2}}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_all(tmp_path_factory.mktemp("syn"), seed=4, counts=COUNTS, size=(40, 56), datasets=("isic2018",))


def _setup(root: Path) -> SegmentationDataModule:
    dm = SegmentationDataModule(DatasetConfig(name="isic2018", root=str(root), image_size=32), batch_size=2)
    dm.setup()
    return dm


def test_run_fails_with_verify_lines(clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESIONBENCH_WORKDIR", str(tmp_path / "work"))
    root = tmp_path / "isic2018"
    shutil.copytree(clean / "isic2018", root)
    gt = root / "ISIC2018_Task1_Training_GroundTruth"
    masks = sorted(gt.glob("*_segmentation.png"))
    m = np.asarray(Image.open(masks[0])).copy()
    m[m == 255] = 200  # antialiased / soft mask
    m[0, :3] = (10, 120, 250)
    Image.fromarray(m).save(masks[0])
    Image.open(masks[1]).resize((20, 30), Image.NEAREST).save(masks[1])  # another size than its image
    with pytest.raises(LesionBenchError) as err:
        _setup(root)
    expected = [f"ERROR {e}" for e in verify("isic2018", root).errors]
    assert len(expected) == 2
    for line in expected:
        assert line in str(err.value).splitlines()
    assert "not binary" in str(err.value) and "mask is 20x30" in str(err.value)


def test_check_runs_once_per_manifest(clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionbench.data import checks
    monkeypatch.setenv("LESIONBENCH_WORKDIR", str(tmp_path / "work"))
    calls: list[str] = []
    real = checks.check_sample
    monkeypatch.setattr(checks, "check_sample", lambda s, r: (calls.append(s.id), real(s, r)))
    _setup(clean / "isic2018")
    assert len(calls) == 10
    _setup(clean / "isic2018")
    assert len(calls) == 10  # unchanged files: not decoded again


def test_unpaired_files_fail_with_verify_lines(clean: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LESIONBENCH_WORKDIR", str(tmp_path / "work"))
    root = tmp_path / "isic2018"
    shutil.copytree(clean / "isic2018", root)
    gt = root / "ISIC2018_Task1_Training_GroundTruth"
    min(gt.glob("*_segmentation.png")).unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(gt / "ISIC_0099999_segmentation.png")
    with pytest.raises(LesionBenchError) as err:
        _setup(root)
    expected = [f"ERROR {e}" for e in verify("isic2018", root).errors]
    assert len(expected) == 2 and all(line in str(err.value).splitlines() for line in expected)
