"""A run is identified by what its data holds, not where it lives or where the command runs (issue 22,
items 3 and 5): content hashes, roots resolved at load, finished runs found from any directory, the
CPU facts that decide bitwise reproducibility in run.json."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runs import fake_run

from lesionbench.config import ExperimentConfig, load_config
from lesionbench.data import SegmentationDataModule
from lesionbench.data.synthetic import write_all
from lesionbench.runfolder import RunInfo, read_run_info, write_run_info

COUNTS = {"isic2018": {"train": 6, "val": 2, "test": 3}}


@pytest.fixture
def replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small ISIC 2018 replica of our own (edited by some tests), splits and caches under tmp_path."""
    monkeypatch.setenv("LESIONBENCH_WORKDIR", str(tmp_path / "work"))
    return write_all(tmp_path / "data", seed=0, counts=COUNTS, size=(40, 56), datasets=("isic2018",))


def _cfg(root: Path | str, **dataset: object) -> ExperimentConfig:
    return load_config({"name": "tiny", "dataset": {"name": "isic2018", "root": str(root), "image_size": 32,
                                                    **dataset},
                        "model": {"name": "unet", "options": {"base_channels": 8}},
                        "trainer": {"epochs": 1, "batch_size": 2, "accelerator": "cpu", "devices": 1}})


def _module(cfg: ExperimentConfig) -> SegmentationDataModule:
    dm = SegmentationDataModule.from_experiment(cfg)
    dm.setup()
    return dm


def _edit_images(root: Path) -> None:
    for path in root.rglob("ISIC_*.jpg"):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(255 - pixels).save(path)


@pytest.mark.timeout(60)
def test_content_hash_ignores_location_and_times_and_sees_pixels(replica: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(replica, tmp_path / "elsewhere")
    for path in copy.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    here, there = _module(_cfg(replica)), _module(_cfg(copy))
    assert here.manifest_hash != there.manifest_hash  # paths and times differ: kept for compatibility
    assert here.content_hash == there.content_hash
    _edit_images(copy)
    assert _module(_cfg(copy)).content_hash != here.content_hash


@pytest.mark.timeout(60)
def test_content_is_stored_with_the_cache_and_agrees_without_it(replica: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import lesionbench.data.cache as cache

    dm = _module(_cfg(replica))
    stored = sorted((tmp_path / "work").rglob(cache.CONTENT))
    assert len(stored) == 3  # train, val, test: each written when its cache was built
    expected = dm.content_hash
    assert _module(_cfg(replica, cache=False)).content_hash == expected  # decoded on the fly: same pixels
    stored[0].unlink()  # a cache built before content was stored: hashed once, then stored
    assert dm.content_hash == expected and stored[0].is_file()
    monkeypatch.setattr(cache, "content_hash", lambda *a: pytest.fail("recomputed a stored content hash"))
    assert dm.content_hash == expected


@pytest.mark.timeout(30)
def test_relative_roots_are_absolute_when_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LESIONBENCH_SYNTHETIC", "replica")
    assert load_config(None, ["dataset.root=data/kvasir"]).dataset.root == str(tmp_path / "data" / "kvasir")
    assert load_config({"dataset": {"root": "~/x"}}).dataset.root == str(Path.home() / "x")
    assert load_config(None, ["dataset.root=synthetic"]).dataset.root == "synthetic"  # the replica keyword
    assert load_config(None, synthetic=True).dataset.root == str(tmp_path / "replica")
    monkeypatch.delenv("LESIONBENCH_SYNTHETIC")
    assert load_config(None, synthetic=True).dataset.root == str(tmp_path / "data" / "synthetic")


@pytest.mark.timeout(30)
def test_run_json_records_the_cpu_and_old_run_json_still_reads(tmp_path: Path) -> None:
    from lesionbench.lifecycle.provenance import provenance

    info = RunInfo.model_validate({"status": "finished", "run": "r", "experiment": "e", "config_hash": "0" * 16,
                                   "data_content": "1" * 16, **provenance()})
    assert info.cpu is not None and info.cpu.model and info.cpu.threads == torch.get_num_threads()
    assert info.cpu.capability == torch.backends.cpu.get_cpu_capability()
    assert set(info.cpu.flags) <= {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                                   "amx_tile", "asimd", "sve"}
    write_run_info(tmp_path, info)
    assert read_run_info(tmp_path) == info
    old = RunInfo(status="finished", run="r", experiment="e", config_hash="0" * 16, data_manifest="abc")
    write_run_info(tmp_path, old)
    assert read_run_info(tmp_path).cpu is None and read_run_info(tmp_path).data_content is None


def _today(cfg: ExperimentConfig) -> str:
    """Today's content of cfg's data, as the suite runner computes it (a fresh process's view)."""
    from lesionbench.studies.datacheck import data_key, today_content

    return today_content(*data_key(cfg))


def _forget_today() -> None:
    from lesionbench.studies.datacheck import today_content

    today_content.cache_clear()


def _finished(out: Path, name: str, cfg: ExperimentConfig, content: str) -> Path:
    run_dir = fake_run(out / name, cfg)
    write_run_info(run_dir, read_run_info(run_dir).model_copy(update={"data_content": content}))
    return run_dir


@pytest.mark.timeout(120)
def test_finished_run_on_other_data_is_reused_with_one_line_naming_both_hashes(
        replica: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from lesionbench.studies.suite import PlannedRun, run_all

    cfg = _cfg(replica)
    _forget_today()
    recorded = _today(cfg)
    runs = [PlannedRun(f"tiny__s{seed}", cfg.model_copy(update={"trainer": cfg.trainer.model_copy(
        update={"seed": seed})})) for seed in (0, 1)]
    dirs = [_finished(tmp_path / "out", r.name, r.config, recorded) for r in runs]
    before = [read_run_info(d) for d in dirs]
    with caplog.at_level(logging.WARNING):
        assert run_all(runs, tmp_path / "out", "s") == {"tiny__s0": "skipped", "tiny__s1": "skipped"}
    assert "data" not in caplog.text  # the same data: nothing to say

    _edit_images(replica)
    _forget_today()
    setups: list[str | None] = []
    setup = SegmentationDataModule.setup

    def counted(self: SegmentationDataModule, stage: str | None = None) -> None:
        setups.append(stage)
        setup(self, stage)

    monkeypatch.setattr(SegmentationDataModule, "setup", counted)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert run_all(runs, tmp_path / "out", "s") == {"tiny__s0": "skipped", "tiny__s1": "skipped"}
    lines = [r.getMessage() for r in caplog.records if "other data" in r.getMessage()]
    today = _today(cfg)
    assert len(lines) == 2 and today != recorded and len(setups) == 1  # today's content: once per dataset
    assert lines[0].startswith("tiny__s0:") and recorded in lines[0] and today in lines[0]
    assert [read_run_info(d) for d in dirs] == before  # reused, not retrained
    assert not (tmp_path / "out" / "superseded").exists()


SUITE = "name: tiny\nexperiments: [{experiment}]\n"
EXPERIMENT = ("dataset: {name: isic2018, image_size: 32}\n"
              "model: {name: unet, options: {base_channels: 8}}\n"
              "trainer: {epochs: 1, batch_size: 2, accelerator: cpu, devices: 1}\n")


def _lb(*args: str) -> str:
    from typer.testing import CliRunner

    from lesionbench.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_finished_run_is_finished_from_any_directory(tiny_synthetic: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's measurement: the default ./data/synthetic root, --out given, a second directory."""
    monkeypatch.delenv("LESIONBENCH_SYNTHETIC", raising=False)
    monkeypatch.setenv("LESIONBENCH_WORKDIR", str(tmp_path / "work"))
    first, second, out = tmp_path / "first", tmp_path / "second", tmp_path / "out"
    for cwd in (first, second):  # the same replica, reached as ./data/synthetic from each directory
        (cwd / "data").mkdir(parents=True)
        (cwd / "data" / "synthetic").symlink_to(tiny_synthetic)
    (tmp_path / "tiny.yaml").write_text(EXPERIMENT)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(experiment=tmp_path / "tiny.yaml"))
    args = ("--suite", str(suite), "--out", str(out), "--quick", "--synthetic")

    monkeypatch.chdir(first)
    _lb("run", *args)
    run_dir = out / "tiny+synthetic+quick" / "tiny__s42"
    info = read_run_info(run_dir)
    assert info.status == "finished"
    monkeypatch.chdir(second)
    assert "1 finished" in _lb("status", *args)
    output = _lb("run", *args)
    assert "skipped" in output and "other data" not in output
    assert read_run_info(run_dir) == info  # not retrained
    assert not (out / "tiny+synthetic+quick" / "superseded").exists()
    assert info.cpu is not None and info.cpu.threads >= 1  # what decides bitwise repeats, recorded
    _forget_today()
    assert info.data_content == _today(load_config(tmp_path / "tiny.yaml", quick=True, synthetic=True))


@pytest.mark.timeout(60)
def test_finished_run_whose_data_is_gone_is_reused_with_one_line(replica: Path, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    from lesionbench.studies.suite import PlannedRun, run_all

    run = PlannedRun("tiny__s42", _cfg(tmp_path / "moved"))
    _finished(tmp_path / "out", run.name, run.config, "1" * 16)
    _forget_today()
    with caplog.at_level(logging.WARNING):
        assert run_all([run], tmp_path / "out", "s") == {"tiny__s42": "skipped"}
    lines = [r.getMessage() for r in caplog.records if "could not be read" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("tiny__s42: finished on data 1111111111111111")
