"""`lesionbench evaluate` as found on real archives (issue 22 §4): reuse keyed on the target's
content, a target folder holding only its test set, the record of exclusions when nothing is left,
and errors that name the target the user asked for. Synthetic replicas, untrained tiny runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runs import fake_run
from typer.testing import CliRunner, Result

from lesionbench.cli import app
from lesionbench.config import parse_config
from lesionbench.data.synthetic import write_all

COUNTS = {"isic2016": {"train": 6, "test": 6}, "isic2018": {"train": 16, "val": 3, "test": 4}}
TEST16 = ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth")


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ISIC 2016 and 2018 replicas (2016's first three test ids are 2018 training ids)."""
    return write_all(tmp_path_factory.mktemp("replica"), seed=0, counts=COUNTS, size=(40, 48))


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LESIONBENCH_DATA", raising=False)
    monkeypatch.setenv("LESIONBENCH_WORKDIR", str(tmp_path / "work"))


def _run(tmp_path: Path, train_root: Path) -> Path:
    """A finished (untrained) tiny U-Net run on ISIC 2018 read from ``train_root``."""
    cfg = parse_config({"name": "ev", "dataset": {"name": "isic2018", "root": str(train_root), "image_size": 32,
                                                  "augmentation": "none", "num_workers": 0},
                        "model": {"name": "unet", "options": {"base_channels": 8}},
                        "trainer": {"epochs": 1, "batch_size": 4, "accelerator": "cpu", "devices": 1}}, "test")
    return fake_run(tmp_path / "runs" / "isic2018_unet__s0", cfg)


def _evaluate(run: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["evaluate", "--run", str(run), *args])


def _ok(result: Result) -> str:
    assert result.exit_code == 0, f"{result.output}{result.exception!r}"
    return result.output


def _only_test_set(replica: Path, dest: Path) -> Path:
    """What a user has who downloaded only the ISIC 2016 test archives."""
    for name in TEST16:
        shutil.copytree(replica / "isic2016" / name, dest / name)
    return dest


@pytest.mark.timeout(120)
def test_reuse_is_keyed_on_the_target_content_not_its_name(replica: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, replica / "isic2018")
    first, other = tmp_path / "a" / "isic2016", tmp_path / "b" / "isic2016"
    shutil.copytree(replica / "isic2016", first)
    shutil.copytree(replica / "isic2016", other)
    assert _ok(_evaluate(run, "--dataset", "isic2016", "--root", str(first))).startswith("evaluated")
    stored = json.loads((run / "eval/isic2016/metrics.json").read_text())
    assert _ok(_evaluate(run, "--dataset", "isic2016", "--root", str(first))).startswith("skipped")
    # another folder whose test set differs (one mask emptied): evaluated again, never the stored result
    from PIL import Image

    mask = other / TEST16[1] / "ISIC_0005004_Segmentation.png"
    with Image.open(mask) as im:
        Image.new("L", im.size).save(mask)
    assert _ok(_evaluate(run, "--dataset", "isic2016", "--root", str(other))).startswith("evaluated")
    again = json.loads((run / "eval/isic2016/metrics.json").read_text())
    assert again["evaluation"]["target_content"] != stored["evaluation"]["target_content"]
    assert again["per_image"] != stored["per_image"]


@pytest.mark.timeout(120)
def test_a_folder_with_only_the_test_archive_is_enough(replica: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, replica / "isic2018")
    target = _only_test_set(replica, tmp_path / "isic2016-test-only")
    out = _ok(_evaluate(run, "--dataset", "isic2016", "--root", str(target)))
    assert out.startswith("evaluated") and "3 of 6 excluded" in out
    got = json.loads((run / "eval/isic2016/metrics.json").read_text())
    assert got["n_test"] == 3 and got["excluded"]["of"] == 6
    record = json.loads((run / "eval/isic2016/excluded.json").read_text())
    assert record["excluded"]["ids"] == got["excluded"]["ids"] and record["n_scored"] == 3


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_image_seen_in_training_writes_the_exclusions_and_exits_non_zero(replica: Path, tmp_path: Path) -> None:
    run = _run(tmp_path, replica / "isic2018")
    cli = shutil.which("lesionbench") or str(Path(sys.executable).with_name("lesionbench"))
    proc = subprocess.run([cli, "evaluate", "--run", str(run), "--dataset", "isic2018", "--split", "train",
                           "--root", str(replica / "isic2018")], capture_output=True, text=True, timeout=100)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    folder = run / "eval" / "isic2018__train"
    record = json.loads((folder / "excluded.json").read_text())
    assert record["excluded"]["count"] == record["excluded"]["of"] == 16 and record["n_scored"] == 0
    assert str(folder / "excluded.json") in " ".join(proc.stderr.split())
    assert not (folder / "metrics.json").exists()


@pytest.mark.timeout(120)
def test_errors_name_the_target_not_the_training_folder(replica: Path, tmp_path: Path) -> None:
    train_root = tmp_path / "train" / "isic2018"
    shutil.copytree(replica / "isic2018", train_root)
    run = _run(tmp_path, train_root)
    # no --root, the run's dataset.root holds only ISIC 2018: say where the target was looked for and the fix
    result = _evaluate(run, "--dataset", "isic2016")
    message = str(result.exception)
    assert result.exit_code != 0 and "isic2016" in message and "--root" in message, message
    assert "unzip the official archive there" not in message  # not "unzip isic2016 into the isic2018 folder"
    # the run's own training data is gone: the error still names the target it was asked for
    shutil.rmtree(train_root)
    result = _evaluate(run, "--dataset", "isic2016", "--root", str(replica / "isic2016"))
    message = str(result.exception)
    assert result.exit_code != 0 and "isic2016" in message and str(train_root) in message, message
