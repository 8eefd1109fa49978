"""Inputs that used to pass silently (issue 23 items 6, 7 and 8): each refused with one line naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lesionbench.config import ConfigError, load_config
from lesionbench.data.splits import read_split_file
from lesionbench.errors import LesionBenchError


@pytest.mark.timeout(30)
def test_a_split_file_listing_a_test_id_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "split.txt"
    path.write_text("train a\ntrain b\ntest c\ntest d\ntest c\n")
    with pytest.raises(LesionBenchError, match=r"split.txt: id c is listed twice in test"):
        read_split_file(path)
    path.write_text("train a\ntest c\ntest d\n")
    assert read_split_file(path)["test"] == ["c", "d"]


@pytest.mark.timeout(30)
def test_quick_refuses_a_mistyped_weights_path_but_drops_tags(tmp_path: Path) -> None:
    base = {"name": "x", "dataset": {"name": "isic2016", "image_size": 64}, "model": {"name": "resnet50-unet"}}
    missing = str(tmp_path / "encoder.pth")
    with pytest.raises(ConfigError, match=r"encoder.pth: encoder weights file not found"):
        load_config({**base, "model": {"name": "resnet50-unet", "options": {"weights": missing}}}, quick=True)
    cfg = load_config({**base, "model": {"name": "resnet50-unet", "options": {"weights": "IMAGENET1K_V1"}}}, quick=True)
    assert cfg.model.options["weights"] == "none"  # a tag: a smoke run downloads nothing


@pytest.mark.timeout(30)
def test_score_refuses_a_non_binary_ground_truth_as_verify_does(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from lesionbench.reporting.score import score_folder

    for d in ("t", "p"):
        (tmp_path / d).mkdir()
    soft = np.zeros((16, 16), np.uint8)
    soft[4:12, 4:12] = 255
    soft[4, 4:12] = 128  # an antialiased edge
    Image.fromarray(soft).save(tmp_path / "t" / "ISIC_0000001_segmentation.png")
    Image.fromarray((soft == 255).astype(np.uint8) * 255).save(tmp_path / "p" / "ISIC_0000001_segmentation.png")
    with pytest.raises(LesionBenchError, match=r"ISIC_0000001_segmentation.png: ground-truth mask is not binary"):
        score_folder(tmp_path / "t", tmp_path / "p")
    Image.fromarray((soft == 255).astype(np.uint8)).save(tmp_path / "t" / "ISIC_0000001_segmentation.png")  # 0/1
    assert score_folder(tmp_path / "t", tmp_path / "p").result["macro_average"]["dice"] == 1.0


@pytest.mark.timeout(60)
def test_a_claim_dated_in_the_future_goes_stale_once_its_heartbeat_stops(tmp_path: Path, caplog) -> None:
    """Issue 23 item 5: a host with a skewed clock must not block a run forever (the age is negative)."""
    import os
    import time

    from lesionbench.studies.claim import CLAIM, ClaimInfo, acquire, read_claim

    info = ClaimInfo(worker="skewed", host="another-host", pid=1, token="t0", started="2026-12-04T00:00:00+00:00")
    (tmp_path / CLAIM).write_text(info.model_dump_json())  # a worker on another host that died holding it
    future = time.time() + 86_400
    os.utime(tmp_path / CLAIM, (future, future))  # its clock runs a day ahead
    with caplog.at_level("WARNING"):
        assert not read_claim(tmp_path, timeout=1.0).stale  # not yet: the timeout has not passed on our clock
    assert any("in the future" in r.getMessage() and CLAIM in r.getMessage() for r in caplog.records)
    time.sleep(1.3)
    assert read_claim(tmp_path, timeout=1.0).stale
    successor = acquire(tmp_path, worker="other", timeout=1.0)
    assert successor is not None and read_claim(tmp_path, timeout=1.0).info.worker == "other"
    successor.release("finished")


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name, value, says", [
    ("LESIONBENCH_CLAIM_TIMEOUT", "abc", "LESIONBENCH_CLAIM_TIMEOUT='abc'"),
    ("LESIONBENCH_CLAIM_TIMEOUT", "0", "LESIONBENCH_CLAIM_TIMEOUT='0'"),
    ("LESIONBENCH_WORKDIR", "FILE", "is a file, not a folder"),
])
def test_a_bad_environment_value_is_one_line_and_exit_2(tmp_path: Path, name: str, value: str, says: str) -> None:
    """Issue 23 item 12: no traceback, the variable named, exit 2 (bad input)."""
    import os
    import subprocess
    import sys

    if value == "FILE":
        value = str(tmp_path / "a-file")
        Path(value).write_text("")
    proc = subprocess.run([sys.executable, "-m", "lesionbench.cli", "status", "--suite", "demo", "--out",
                           str(tmp_path)], env={**os.environ, name: value}, capture_output=True, text=True,
                          timeout=170)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in proc.stderr + proc.stdout and "Traceback" not in proc.stderr + proc.stdout
