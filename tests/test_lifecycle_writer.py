"""One start/finish writer for every engine (lesionbench/lifecycle), and the engine chosen above both."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lesionbench.config import ExperimentConfig, parse_config
from lesionbench.errors import LesionBenchError
from lesionbench.runfolder import RunResult, read_metrics, read_per_image, read_run_info

ROW = {"id": "img0", "dice": 0.5, "iou": 1 / 3, "precision": 0.5, "recall": 0.5, "specificity": 1.0, "accuracy": 0.9}


def tiny() -> ExperimentConfig:
    return parse_config({"name": "tiny", "model": {"name": "unet"}, "trainer": {"seed": 3}})


@pytest.mark.timeout(60)
def test_start_then_finish_write_the_contract_files(tmp_path: Path) -> None:
    from lesionbench.lifecycle import finish_run, is_finished, start_run

    run, cfg = tmp_path / "s" / "tiny__s3", tiny()
    (run).mkdir(parents=True)
    (run / "run.json").write_text('{"status": "failed", "run": "tiny__s3", "experiment": "tiny", '
                                  f'"config_hash": "{cfg.config_hash()}", "resume_count": 2}}')
    info = start_run(run, cfg, "s", engine="nnunet", versions={"nnunetv2": "9.9"}, data_manifest="m" * 16)
    assert yaml.safe_load((run / "config.yaml").read_text()) == cfg.model_dump(mode="json")
    started = read_run_info(run)
    assert started == info and started.status == "running" and started.engine == "nnunet"
    assert started.resume_count == 2 and started.versions["nnunetv2"] == "9.9" and started.versions["torch"]
    assert started.data_manifest == "m" * 16 and started.git_commit and started.cpu is not None
    (run / "weights.bin").write_bytes(b"w")
    metrics = {"per_image": {"dice": 0.5}, "experiment": cfg.name, "run": run.name, "suite": "s",
               "dataset": cfg.dataset.name, "model": cfg.model.name, "seed": 3, "config_hash": cfg.config_hash(),
               "n_test": 1, "best_checkpoint": "weights.bin"}
    done = finish_run(run, info, metrics, [ROW], best_checkpoint="weights.bin", train_time_s=1.5)
    assert read_metrics(run) == done and [r.id for r in read_per_image(run)] == ["img0"]
    finished = read_run_info(run)
    assert finished.status == "finished" and finished.finished and finished.started == info.started
    assert finished.train_time_s == 1.5 and is_finished(run, cfg)


@pytest.mark.timeout(60)
def test_finish_checks_the_contract_before_writing_anything(tmp_path: Path) -> None:
    from lesionbench.lifecycle import finish_run, start_run

    run = tmp_path / "tiny__s3"
    info = start_run(run, tiny(), "s")
    with pytest.raises(ValueError, match="n_test"):
        finish_run(run, info, {"per_image": {"dice": 0.5}, "experiment": "tiny", "run": run.name, "dataset": "x",
                               "model": "unet", "seed": 3, "config_hash": "h", "best_checkpoint": "w"}, [ROW])
    assert read_run_info(run).status == "running" and not (run / "per_image.csv").exists()


@pytest.mark.timeout(60)
def test_the_engine_is_chosen_above_the_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lesionbench.engines.nnunet as nnunet
    from lesionbench.studies.train import train
    from lesionbench.training.run import train as train_lightning

    cfg = parse_config({"name": "nn", "engine": "nnunet"})
    with pytest.raises(LesionBenchError, match=r"engine: nnunet is not trained by the Lightning loop.*studies\.train"):
        train_lightning(cfg, tmp_path / "run")
    calls = []
    monkeypatch.setattr(nnunet, "train_nnunet", lambda c, d, s: calls.append((c, d, s)) or RunResult(d, "finished"))
    assert train(cfg, tmp_path / "run", suite="s").status == "finished"
    assert calls == [(cfg, tmp_path / "run", "s")] and not (tmp_path / "run").exists()
