"""Synthetic replicas, official layouts, scanning rules (junk, upper case, missing folders)."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionbench.data.layouts import LAYOUTS, scan
from lesionbench.data.leakage import find_leaks
from lesionbench.data.synthetic import write_all
from lesionbench.errors import LesionBenchError

COUNTS = {"isic2016": {"train": 6, "test": 3}, "isic2017": {"train": 6, "val": 2, "test": 3},
          "isic2018": {"train": 6, "val": 2, "test": 3}, "kvasir-seg": {"all": 5}}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lesionbench-synthetic.json"}


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_all(tmp_path_factory.mktemp("syn"), seed=0, counts=COUNTS, size=(40, 72))


def test_same_seed_same_bytes_other_seed_differs(replica: Path, tmp_path: Path) -> None:
    again = write_all(tmp_path / "a", seed=0, counts=COUNTS, size=(40, 72))
    other = write_all(tmp_path / "b", seed=1, counts=COUNTS, size=(40, 72))
    d0, d1, d2 = _digest(replica), _digest(again), _digest(other)
    assert d0 == d1
    isic = {k for k in d0 if "kvasir" not in k}
    assert isic == {k for k in d2 if "kvasir" not in k}  # Kvasir ids are random strings per seed
    assert all(d0[k] != d2[k] for k in isic if Path(k).name.startswith("ISIC_") and k.endswith(".jpg"))


def test_official_folder_and_file_names(replica: Path) -> None:
    r18 = replica / "isic2018"
    for folder in ["ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Validation_GroundTruth",
                   "ISIC2018_Task2_Training_GroundTruth_v3", "ISIC2018_Task2_Test_GroundTruth"]:
        assert (r18 / folder).is_dir(), folder
    assert (r18 / "ISIC2018_Task1-2_Training_Input" / "LICENSE.txt").is_file()
    assert (replica / "isic2016/ISBI2016_ISIC_Part1_Training_GroundTruth/ISIC_0000000_Segmentation.png").is_file()
    assert (replica / "isic2017/ISIC-2017_Test_v2_Data/ISIC_0009000_superpixels.png").is_file()
    assert (replica / "isic2017/ISIC-2017_Training_Data/ISIC-2017_Training_Data_metadata.csv").is_file()
    assert (replica / "kvasir-seg/Kvasir-SEG/kavsir_bboxes.json").is_file()
    mask = np.asarray(Image.open(r18 / "ISIC2018_Task1_Training_GroundTruth/ISIC_0009000_segmentation.png"))
    assert set(np.unique(mask).tolist()) <= {0, 255}
    assert len(list((r18 / "ISIC2018_Task2_Validation_GroundTruth").glob("ISIC_0015000_attribute_*.png"))) == 5


@pytest.mark.parametrize("name,expected", [
    ("isic2016", {"train": 6, "test": 3}), ("isic2017", {"train": 6, "val": 2, "test": 3}),
    ("isic2018", {"train": 6, "val": 2, "test": 3}), ("isic2018-task2", {"train": 6, "val": 2, "test": 3}),
    ("kvasir-seg", {"all": 5}),
])
def test_scan_counts_ignore_junk(replica: Path, name: str, expected: dict[str, int]) -> None:
    sub = LAYOUTS[name].subdir
    parts = scan(name, replica / sub)
    assert {k: len(v) for k, v in parts.items()} == expected
    for samples in parts.values():
        for s in samples:
            assert not s.image.name.startswith("._") and "superpixels" not in s.image.name
            assert len(s.masks) == LAYOUTS[name].num_classes


def test_upper_case_extension_and_unpaired(replica: Path, tmp_path: Path) -> None:
    root = tmp_path / "isic2016"
    shutil.copytree(replica / "isic2016", root)
    img = root / "ISBI2016_ISIC_Part1_Test_Data" / "ISIC_0005000.jpg"
    img.rename(img.with_suffix(".JPG"))
    assert len(scan("isic2016", root)["test"]) == 3
    (root / "ISBI2016_ISIC_Part1_Test_GroundTruth" / "ISIC_0005001_Segmentation.png").unlink()
    with pytest.raises(LesionBenchError, match=r"ISIC_0005001\.jpg \(no mask\)"):
        scan("isic2016", root)


def test_missing_folder_names_archive(tmp_path: Path) -> None:
    with pytest.raises(LesionBenchError, match="ISIC2018_Task1-2_Training_Input.*challenge.isic-archive.com"):
        scan("isic2018", tmp_path)


def test_cross_edition_leak_found(replica: Path) -> None:
    train18 = scan("isic2018", replica / "isic2018")["train"]
    test17 = scan("isic2017", replica / "isic2017")["test"]
    leaks = find_leaks(train18, test17)
    assert sorted(x.eval_id for x in leaks) == ["ISIC_0009000", "ISIC_0009001", "ISIC_0009002"]
    assert {x.reason for x in leaks} == {"id"}
    renamed = [type(s)("X" + s.id, s.image, s.masks) for s in test17]  # same bytes, other id
    assert len([x for x in find_leaks(train18, renamed) if x.reason == "bytes"]) == 3


def test_ensure_is_idempotent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lesionbench.data.synthetic as syn
    calls = []
    monkeypatch.setattr(syn, "write_all", lambda out, seed=0: calls.append(out) or
                        write_all(out, seed=seed, counts=COUNTS, size=(40, 48)))
    assert syn.ensure(tmp_path) == tmp_path and syn.ensure(tmp_path) == tmp_path
    assert len(calls) == 1


def test_processes_started_together_write_the_replica_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--workers``/SLURM tasks all call ensure() on a fresh machine: one writes, the rest wait for it
    (each thread opens the lock file itself, which flock treats like separate processes)."""
    import threading
    import time

    import lesionbench.data.synthetic as syn
    calls = []

    def slow_write(out, seed=0):
        calls.append(out)
        time.sleep(0.3)  # the others arrive while this one writes
        return write_all(out, seed=seed, counts=COUNTS, size=(40, 48))

    monkeypatch.setattr(syn, "write_all", slow_write)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(syn.ensure(tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [tmp_path] * 3 and len(calls) == 1


def test_a_garbled_marker_means_write_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lesionbench.data.synthetic as syn
    (tmp_path / syn.MARKER).write_text('{"version": ')  # an old non-atomic write cut short
    monkeypatch.setattr(syn, "write_all", lambda out, seed=0: write_all(out, seed=seed, counts=COUNTS, size=(40, 48)))
    assert syn.ensure(tmp_path) == tmp_path
    assert json.loads((tmp_path / syn.MARKER).read_text())["version"] == syn.VERSION
