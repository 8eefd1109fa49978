"""The run-folder contract (lesionbench/runfolder.py) and the config hash: no training needed."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from runs import fake_run

from lesionbench.config import HASH_EXCLUDED, ExperimentConfig, load_config
from lesionbench.runfolder import (
    SCHEMA_VERSION,
    RunFolderError,
    read_metrics,
    read_per_image,
    read_run_info,
)

DEMO = Path(__file__).parents[1] / "results" / "demo"


def _cfg(**trainer) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "name": "tiny", "dataset": {"name": "synthetic", "image_size": 32},
        "model": {"name": "unet", "options": {"base_channels": 8}},
        "trainer": {"epochs": 1, "batch_size": 2, "accelerator": "cpu", "devices": 1, **trainer}})


def test_fake_run_round_trips_through_the_models(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", _cfg())
    info, metrics, rows = read_run_info(run), read_metrics(run), read_per_image(run)
    assert info.status == "finished" and info.schema_version == SCHEMA_VERSION
    assert json.loads((run / "metrics.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert metrics.config_hash == info.config_hash == _cfg().config_hash()
    assert [r.id for r in rows] == ["img0", "img1"] and 0 <= rows[0].dice <= 1
    assert (run / metrics.best_checkpoint).is_file() and metrics.best_checkpoint == "model.safetensors"


@pytest.mark.skipif(not DEMO.is_dir(), reason="no committed demo results")
def test_committed_results_without_a_schema_version_read_as_version_1() -> None:
    runs = [d for d in DEMO.iterdir() if (d / "run.json").is_file()]
    assert runs
    for run in runs:
        assert read_run_info(run).schema_version == 1 and read_metrics(run).n_test > 0
        assert read_per_image(run)


@pytest.mark.parametrize("name,edit,expected", [
    ("metrics.json", lambda m: {**m, "n_test": "five"}, "metrics.json: key 'n_test': Input should be a valid integer"),
    ("metrics.json", lambda m: {k: v for k, v in m.items() if k != "dataset"}, "metrics.json: key 'dataset': Field required"),
    ("metrics.json", lambda m: {**m, "per_image": {"dice": "high"}}, "metrics.json: key 'per_image.dice':"),
    ("run.json", lambda m: {**m, "status": "done"}, "run.json: key 'status': Input should be"),
    ("run.json", lambda m: {**m, "schema_version": 99}, "run.json: key 'schema_version':"),
    ("run.json", lambda m: {**m, "surprise": 1}, "run.json: key 'surprise': Extra inputs are not permitted"),
])
def test_a_bad_file_fails_with_one_line_naming_it(tmp_path: Path, name: str, edit, expected: str) -> None:
    run = fake_run(tmp_path / "run", _cfg())
    path = run / name
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    reader = read_metrics if name == "metrics.json" else read_run_info
    with pytest.raises(RunFolderError) as err:
        reader(run)
    assert expected in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_bad_json_missing_file_and_bad_rows(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run", _cfg())
    (run / "metrics.json").write_text('{"per_image": ')
    with pytest.raises(RunFolderError, match=r"metrics.json: not valid JSON"):
        read_metrics(run)
    (run / "run.json").unlink()
    with pytest.raises(RunFolderError, match=r"run.json: missing"):
        read_run_info(run)
    csv = run / "per_image.csv"
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(RunFolderError, match=r"per_image.csv line 3: image id 'img0' appears twice"):
        read_per_image(run)
    csv.write_text(lines[0] + "\n" + lines[1].replace(lines[1].split(",")[1], "n/a", 1) + "\n")
    with pytest.raises(RunFolderError, match=r"per_image.csv line 2: key 'dice': Input should be a valid number"):
        read_per_image(run)


def test_hash_ignores_what_does_not_change_results() -> None:
    base = load_config(None, ["trainer.logger=csv", "dataset.num_workers=0", "optimizer.lr=1e-3", "trainer.seed=1"])
    def with_(item: str) -> str:
        return load_config(None, ["optimizer.lr=1e-3", "trainer.seed=1", item]).config_hash()

    for item in ("trainer.logger=wandb", "dataset.num_workers=4", "dataset.cache=false", "trainer.accelerator=cpu",
                 "description=another", "name=renamed", "trainer.compile=true"):
        assert with_(item) == base.config_hash(), item
    for item in ("optimizer.lr=2e-3", "trainer.seed=2", "trainer.precision=bf16-mixed", "trainer.devices=2",
                 "dataset.image_size=64", "trainer.deterministic=true"):
        assert with_(item) != base.config_hash(), item


def test_every_hash_exclusion_names_a_real_field_and_a_reason() -> None:
    for dotted, reason in HASH_EXCLUDED.items():
        node: type = ExperimentConfig
        for part in dotted.split("."):
            assert part in node.model_fields, dotted
            node = node.model_fields[part].annotation
        assert len(reason) > 10


def test_atomic_writes_leave_no_temp_file_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionbench import io

    target = tmp_path / "metrics.json"
    target.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.os, "fsync", full)
    with pytest.raises(OSError):
        io.atomic_write_json(target, {"new": 1})
    with pytest.raises(OSError):
        with io.atomic_path(tmp_path / "model.safetensors") as tmp:
            tmp.write_bytes(b"x")
            full(0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"] and target.read_text() == "old"


def test_a_run_finished_before_the_hash_rules_changed_is_still_finished_and_loads(tmp_path: Path) -> None:
    """Old layout: a Lightning best.ckpt, hashes recorded under the old rules. Not retrained, still loads."""
    import torch

    from lesionbench.inference.load import load_run
    from lesionbench.lifecycle import is_finished
    from lesionbench.runfolder import write_metrics, write_run_info
    from lesionbench.training.task import SegmentationTask

    cfg = _cfg()
    run = fake_run(tmp_path / "run", cfg)
    task = SegmentationTask(cfg.model_dump(mode="json"))
    (run / "model.safetensors").unlink()
    (run / "checkpoints" / "0-train").mkdir(parents=True)
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": {"config": cfg.model_dump(mode="json")}},
               run / "checkpoints" / "0-train" / "best.ckpt")
    old = {"config_hash": "0ld0ld0ld0ld0ld0", "best_checkpoint": "checkpoints/0-train/best.ckpt"}
    write_run_info(run, read_run_info(run).model_copy(update=old))
    write_metrics(run, read_metrics(run).model_copy(update=old))
    assert is_finished(run, cfg) and not is_finished(run, _cfg(seed=1))
    loaded = load_run(run).network
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
