"""verify(): each planted fault is found and named; partial downloads only warn."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionbench.data.synthetic import write_all
from lesionbench.data.verify import verify

COUNTS = {"isic2016": {"train": 5, "test": 3}, "isic2017": {"train": 2, "val": 2, "test": 2},
          "isic2018": {"train": 5, "val": 2, "test": 3}, "kvasir-seg": {"all": 4}}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_all(tmp_path_factory.mktemp("syn"), seed=5, counts=COUNTS, size=(40, 64))


def test_clean_replica_has_only_count_warnings(clean: Path) -> None:
    r = verify("isic2018-task2", clean / "isic2018")
    assert r.ok and r.counts == {"train": 5, "val": 2, "test": 3}
    assert len(r.warnings) == 3 and all("official archive has" in w for w in r.warnings)
    assert verify("kvasir-seg", clean).ok  # finds <root>/kvasir-seg itself; JPEG masks exempt


def test_planted_faults_are_each_named(clean: Path, tmp_path: Path) -> None:
    root = tmp_path / "isic2018"
    shutil.copytree(clean / "isic2018", root)
    tr_img, tr_gt = root / "ISIC2018_Task1-2_Training_Input", root / "ISIC2018_Task1_Training_GroundTruth"
    ids = sorted(p.stem for p in tr_img.glob("ISIC_*.jpg"))
    (tr_gt / f"{ids[0]}_segmentation.png").unlink()                                        # missing mask
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tr_gt / "ISIC_0099999_segmentation.png")  # orphan mask
    data = (tr_img / f"{ids[1]}.jpg").read_bytes()
    (tr_img / f"{ids[1]}.jpg").write_bytes(data[: len(data) // 3])                           # corrupt JPEG
    m2 = tr_gt / f"{ids[2]}_segmentation.png"
    Image.open(m2).resize((7, 9), Image.NEAREST).save(m2)                                                 # size mismatch
    m3 = tr_gt / f"{ids[3]}_segmentation.png"
    arr = np.asarray(Image.open(m3)).copy()
    arr[0, :4] = [0, 1, 128, 255]
    Image.fromarray(arr).save(m3)                                                            # non-binary
    r = verify("isic2018", root)
    assert not r.ok and len(r.errors) == 5, r.errors
    text = "\n".join(r.errors)
    assert f"{ids[0]}.jpg: image has no mask (expected {ids[0]}_segmentation.png" in text
    assert "ISIC_0099999_segmentation.png: mask has no image" in text
    assert f"{ids[1]}.jpg: unreadable image" in text
    assert f"{ids[2]}_segmentation.png: mask is 7x9 but image" in text
    assert f"{ids[3]}_segmentation.png: mask is not binary (values 0, 1, 128, 255" in text
    assert "FAILED" in r.summary() and "5 error(s)" in r.summary()
    assert r.lines()[-1] == r.summary()


def test_partial_download_only_warns(clean: Path, tmp_path: Path) -> None:
    root = tmp_path / "isic2017"
    shutil.copytree(clean / "isic2017", root)
    shutil.rmtree(root / "ISIC-2017_Test_v2_Data")
    shutil.rmtree(root / "ISIC-2017_Validation_Part1_GroundTruth")
    r = verify("isic2017", root)
    assert r.ok and r.counts == {"train": 2}
    assert sum("not found" in w for w in r.warnings) == 2
    empty = verify("isic2017", tmp_path / "nothing")
    assert not empty.ok and "no isic2017 split found" in empty.errors[0]
